//! The plugin host: finds backend plugins (`*.so`) in the configured directories, refuses
//! unsafe or incompatible ones, drives loaded and linked-in backends alike through
//! [`BackendInstance`], and guards every call ([`GuardedBackend`]).
//!
//! Loading. A library is refused before `dlopen` when it, or any directory on its path, is
//! group- or world-writable (a sticky directory excepted) or owned by someone other than
//! root or the service user, or when a symbolic link leads out of its directory
//! (`open_trusted`); the file checked is mapped by descriptor. With a [`TrialLoad`] it is
//! first mapped in a child process and refused when its initialisers do not finish there.
//! It is refused after
//! `dlopen` when its entry symbol is missing, its `abi_version` is outside
//! [`OLDEST_ABI_VERSION`]..=[`ABI_VERSION`], its `struct_size` is smaller than the table of
//! the version it declares or a version-1 entry in the table is null. Only the first 8
//! bytes of the vtable are read before the version check. A version-1 plugin has no config
//! check ([`LoadedLibrary::check_config`] answers `None`); version 2 may leave it null.
//!
//! Never unloading. A library stays mapped for the life of the process: its `Library`
//! handle is leaked and registered in a process-wide table keyed by canonical path. A plugin
//! call that timed out may still be running on a blocking thread, a plugin may have started
//! threads of its own, and `dlclose` under running code is a crash. Loading the same path
//! again (a reload) reuses the mapped library, so upgrading a plugin's file takes a restart.
//!
//! Calling. The ABI is synchronous; [`GuardedBackend`] runs each call on tokio's blocking
//! pool with a timeout. A failed, panicking or timed-out call marks the backend *degraded*:
//! further calls are refused for an exponentially growing backoff; a timed-out call leaves
//! the instance *hung* and it is not called again until that call returns. After a panic
//! the instance is recreated when a factory is known (plugins created through
//! [`GuardedBackend::create_plugin`]). Because a hung call holds a blocking thread, the
//! runtime should be shut down with `Runtime::shutdown_timeout`, not by dropping it.

mod discovery;
mod exit_guard;
mod ffi;
mod guarded;
mod trial_load;
mod trust;

pub use discovery::{PluginHost, PluginInfo, find_plugin_file, plugin_name};
pub use exit_guard::{PLUGIN_EXIT_STATUS, exit_process, guard_exits, loads_in_flight};
pub use ffi::{LoadedLibrary, PluginInstance, trial_load_main};
pub use guarded::{CallPolicy, Degraded, GuardStats, GuardedBackend, InstanceFactory};
pub use trial_load::{PROBE_COMMAND, TrialLoad};

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use infadapt_plugin_abi::{
    BackendError, ENTRY_SYMBOL, OLDEST_ABI_VERSION, SCHEMA_VERSION, STATUS_ERROR,
    STATUS_INVALID_INPUT, STATUS_OK, STATUS_PANIC, STATUS_UNAVAILABLE,
};
use serde::de::DeserializeOwned;

/// Default time limit of one plugin call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// While a backend stays degraded, a changed error is warned about at most this often.
pub const REWARN_INTERVAL: Duration = Duration::from_secs(60);

/// Largest answer accepted from a plugin, bytes.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The calls a backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Create,
    CheckConfig,
    Describe,
    Observe,
    Apply,
    Health,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Create => "create",
            Call::CheckConfig => "check_config",
            Call::Describe => "describe",
            Call::Observe => "observe",
            Call::Apply => "apply",
            Call::Health => "health",
        })
    }
}

/// Where a backend's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendOrigin {
    /// Loaded from this shared library.
    Plugin(PathBuf),
    /// Linked into the daemon.
    Linked,
}

impl fmt::Display for BackendOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendOrigin::Plugin(path) => write!(f, "plugin {}", path.display()),
            BackendOrigin::Linked => f.write_str("linked in"),
        }
    }
}

fn seconds(d: &Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else if s >= 1.0 {
        format!("{s:.1} s")
    } else {
        format!("{} ms", d.as_millis())
    }
}

fn status_name(code: &i32) -> &'static str {
    match *code {
        STATUS_OK => "ok",
        STATUS_ERROR => "error",
        STATUS_INVALID_INPUT => "invalid input",
        STATUS_PANIC => "panic",
        STATUS_UNAVAILABLE => "unavailable",
        _ => "unknown status",
    }
}

/// Everything that goes wrong loading or calling a backend.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("plugin directory {}: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {}: {source}", path.display())]
    Metadata {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {} refused: {reason}", path.display())]
    Unsafe { path: PathBuf, reason: String },
    #[error("plugin {} could not be loaded: {message}", path.display())]
    Load { path: PathBuf, message: String },
    #[error(
        "plugin {} could not be loaded: cannot start the trial load ({} {PROBE_COMMAND}): {source}",
        path.display(),
        program.display()
    )]
    TrialStart {
        path: PathBuf,
        program: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "plugin {} could not be loaded: its initialisers did not finish within {seconds:.1} s \
         in a trial load in a separate process; not loaded",
        path.display()
    )]
    TrialTimeout { path: PathBuf, seconds: f64 },
    #[error("plugin {} could not be loaded: waiting for the trial load: {source}", path.display())]
    TrialWait {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The trial ended with `how` (an exit status or a signal), the child having said `said`
    /// (its standard error, trimmed, when it said anything).
    #[error(
        "plugin {} could not be loaded: a trial load in a separate process ended with {how}{}; \
         not loaded",
        path.display(),
        said.as_ref().map(|s| format!(" ({s})")).unwrap_or_default()
    )]
    TrialEnded {
        path: PathBuf,
        how: String,
        said: Option<String>,
    },
    #[error("plugin {} refused: it exports no `{ENTRY_SYMBOL}` symbol ({message})", path.display())]
    MissingEntry { path: PathBuf, message: String },
    #[error(
        "plugin {} refused: built for plugin ABI version {found}, this daemon speaks versions {OLDEST_ABI_VERSION} to {expected}",
        path.display()
    )]
    AbiVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error(
        "plugin {} refused: its vtable is {found} bytes, this daemon needs at least {expected}",
        path.display()
    )]
    VTableTooSmall {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("plugin {} refused: {problem}", path.display())]
    BadVTable { path: PathBuf, problem: String },
    #[error("plugin {} is named `{name}` like {}, which was found first", path.display(), first.display())]
    DuplicateName {
        name: String,
        path: PathBuf,
        first: PathBuf,
    },
    #[error("no plugin named `{name}` in {dirs}")]
    NotFound { name: String, dirs: String },
    #[error("backend `{backend}` ({origin}): {call} failed ({}): {message}", status_name(.code))]
    Failed {
        backend: String,
        origin: BackendOrigin,
        call: Call,
        code: i32,
        message: String,
    },
    #[error("backend `{backend}` ({origin}): {call} panicked: {message}")]
    Panicked {
        backend: String,
        origin: BackendOrigin,
        call: Call,
        message: String,
    },
    #[error("backend `{backend}` ({origin}): {call} timed out after {}", seconds(.timeout))]
    TimedOut {
        backend: String,
        origin: BackendOrigin,
        call: Call,
        timeout: Duration,
    },
    #[error(
        "backend `{backend}` ({origin}): {call} not attempted: its {hung_call} has been hung for {}",
        seconds(.hung_for)
    )]
    Hung {
        backend: String,
        origin: BackendOrigin,
        call: Call,
        hung_call: Call,
        hung_for: Duration,
    },
    #[error(
        "backend `{backend}` ({origin}) is degraded: {call} not attempted for another {}; last error: {last_error}",
        seconds(.retry_in)
    )]
    Backoff {
        backend: String,
        origin: BackendOrigin,
        call: Call,
        retry_in: Duration,
        last_error: String,
    },
    #[error("backend `{backend}` ({origin}): {call} not attempted: {reason}")]
    Unusable {
        backend: String,
        origin: BackendOrigin,
        call: Call,
        reason: String,
    },
    /// A plugin answered more than [`MAX_ANSWER_BYTES`]; the text becomes the call's error.
    #[error("answer of {bytes} bytes exceeds the limit of {MAX_ANSWER_BYTES}")]
    AnswerTooLarge { bytes: usize },
}

impl HostError {
    /// Whether the error came from the plugin panicking.
    pub fn is_panic(&self) -> bool {
        matches!(self, HostError::Panicked { .. })
    }

    /// Whether the error is a call that ran past its time limit.
    pub fn is_timeout(&self) -> bool {
        matches!(self, HostError::TimedOut { .. })
    }
}

fn backend_error(backend: &str, origin: &BackendOrigin, call: Call, e: BackendError) -> HostError {
    if e.code == STATUS_PANIC {
        HostError::Panicked {
            backend: backend.to_owned(),
            origin: origin.clone(),
            call,
            message: e.message,
        }
    } else {
        HostError::Failed {
            backend: backend.to_owned(),
            origin: origin.clone(),
            call,
            code: e.code,
            message: e.message,
        }
    }
}

/// Parses a plugin's JSON answer, refusing a `schema` this build does not read (the fuzz
/// target `abi_from_plugin` drives it with arbitrary bytes).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BackendError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| BackendError::failed(format!("the answer is not valid JSON: {e}")))?;
    // serde reads a struct from an array too (`[2]` is a schema-2 answer), which would
    // pass the schema check below unseen: every answer is an object.
    if !value.is_object() {
        return Err(BackendError::failed(
            "the answer is not a JSON object".to_owned(),
        ));
    }
    if let Some(schema) = value.get("schema")
        && schema.as_u64() != Some(u64::from(SCHEMA_VERSION))
    {
        return Err(BackendError::failed(format!(
            "the answer has schema {schema}; this daemon reads schema {SCHEMA_VERSION}"
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| BackendError::failed(format!("the answer does not fit the schema: {e}")))
}

#[cfg(test)]
mod tests;
