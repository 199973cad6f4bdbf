//! The process backend's error type and its mapping onto the plugin ABI's status codes.

use std::path::PathBuf;
use std::sync::Arc;

use infadapt_plugin_abi::BackendError;
use infadapt_plugin_support::HttpError;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nvml_wrapper::error::NvmlError;

use crate::config::PLACEHOLDERS;
use crate::system::cpu_list;

/// What can go wrong in the process backend.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The backend configuration is invalid; every problem is listed, one per line.
    #[error("process backend config:\n{}", .0.join("\n"))]
    Config(Vec<String>),
    /// A plan names something the configuration cannot run.
    #[error("plan: {0}")]
    Plan(String),
    /// The state file of recorded workers cannot be read or written.
    #[error("state file {path}: {message}")]
    State { path: String, message: String },
    /// A worker could not be started, for the reason in `cause`.
    #[error("{stage}/{variant}: cannot start worker: {cause}")]
    Spawn {
        stage: String,
        variant: String,
        cause: Box<ProcessError>,
    },

    /// A command template opens a placeholder it does not close.
    #[error("`{text}`: `{{` without a closing `}}`")]
    UnclosedPlaceholder { text: String },
    /// A command template names a placeholder that does not exist.
    #[error(
        "`{text}`: unknown placeholder `{{{name}}}` (known: {})",
        PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ")
    )]
    UnknownPlaceholder { text: String, name: String },

    /// The plan wants a variant the configuration does not have.
    #[error("no such variant in the config")]
    NoSuchVariant,
    /// Every port of the range is taken.
    #[error("no free port in port_range [{first}, {last}] on {host}")]
    NoFreePort { first: u16, last: u16, host: String },
    #[error("cannot create log_dir {}: {source}", path.display())]
    LogDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {}: {source}", path.display())]
    LogOpen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot share {}: {source}", path.display())]
    LogShare {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run `{program}`: {source}")]
    Run {
        program: String,
        source: std::io::Error,
    },

    /// NVML could not be loaded (no NVIDIA driver): GPU placement is off.
    #[error(
        "GPU placement unavailable: NVML cannot be initialised ({0}); workers run without a GPU"
    )]
    NvmlInit(Arc<NvmlError>),
    /// No variant wants a GPU, so NVML was not loaded.
    #[error("no variant asks for a GPU")]
    NoGpuWanted,
    /// An NVML query failed; `query` names it (`device count`, `memory of device 0`, ...).
    #[error("NVML {query}: {source}")]
    NvmlQuery { query: String, source: NvmlError },
    /// A variant requires a GPU and none has the memory it needs; `free` is (index, MiB).
    #[error(
        "no GPU has {need_mb:.0} MiB free (free now: {})",
        free.iter().map(|(index, mb)| format!("GPU {index} {mb:.0} MiB")).collect::<Vec<_>>().join(", ")
    )]
    NoGpuMemory { need_mb: f64, free: Vec<(u32, f64)> },

    #[error("cannot send {} to pid {pid}: {source}", signal.as_str())]
    Signal {
        signal: Signal,
        pid: i32,
        source: Errno,
    },
    #[error("CPU {cpu} cannot be put in an affinity mask: {source}")]
    AffinityMask { cpu: usize, source: Errno },
    #[error("cannot pin pid {pid} to CPUs {}: {source}", cpu_list(cpus))]
    Pin {
        pid: i32,
        cpus: Vec<usize>,
        source: Errno,
    },

    /// A worker's health or counters URL answered with a status that is not 2xx.
    #[error("{url} answered {status}")]
    WorkerStatus { url: String, status: u16 },
    /// A worker's counters URL answered text that is not JSON (`error` is the parser's).
    #[error("{url}: not JSON: {error}")]
    WorkerNotJson { url: String, error: String },
    /// A worker's URL could not be reached or read (`detail` is the transport's).
    #[error("{url}: {detail}")]
    WorkerUnreachable { url: String, detail: String },
    /// Any other failure of a request to a worker.
    #[error(transparent)]
    WorkerHttp(HttpError),
    #[error("`served` is missing or not a whole number")]
    ServedMissing,
    #[error("`in_flight` is not a count")]
    InFlightNotCount,
    /// The thread checking a worker panicked; `what` names the check.
    #[error("{what} panicked")]
    CheckPanicked { what: &'static str },
}

impl ProcessError {
    /// A failed request to a worker's `url`, as the plugin's events and errors say it.
    pub fn worker_request(url: &str, error: HttpError) -> ProcessError {
        let url = url.to_owned();
        match error {
            HttpError::Status { status, .. } => ProcessError::WorkerStatus { url, status },
            HttpError::NotJson { error, .. } => ProcessError::WorkerNotJson { url, error },
            HttpError::Transport { detail, .. } => ProcessError::WorkerUnreachable { url, detail },
            other => ProcessError::WorkerHttp(other),
        }
    }
}

impl From<ProcessError> for BackendError {
    fn from(error: ProcessError) -> BackendError {
        match &error {
            ProcessError::Config(_) | ProcessError::Plan(_) => {
                BackendError::invalid(error.to_string())
            }
            _ => BackendError::failed(error.to_string()),
        }
    }
}
