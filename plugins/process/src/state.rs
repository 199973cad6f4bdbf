//! The state file: every worker the backend runs (pid, start time, port, placement,
//! command), written atomically after each change so that a restarted daemon can adopt
//! the workers that still run and clean up after the ones that do not.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ProcessError;

/// Version of the state file's layout.
pub const STATE_SCHEMA: u32 = 1;

/// One recorded worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub stage: String,
    pub variant: String,
    pub batch: u32,
    pub cores: u32,
    pub cpus: Vec<usize>,
    #[serde(default)]
    pub gpu: Option<u32>,
    #[serde(default)]
    pub gpu_uuid: Option<String>,
    pub port: u16,
    pub pid: i32,
    /// Start time in clock ticks after boot (`/proc/PID/stat` field 22), against PID reuse.
    pub start_ticks: u64,
    pub argv: Vec<String>,
    pub url: String,
    pub health_url: String,
    /// `starting`, `ready`, `draining` or `stopping`.
    pub state: String,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub schema: u32,
    /// Kernel boot id when written: after a reboot no recorded process is ours.
    pub boot_id: String,
    /// The daemon process that wrote it.
    pub writer_pid: u32,
    pub workers: Vec<WorkerRecord>,
}

/// Where the state of `pipeline` lives in `state_dir`.
pub fn state_path(state_dir: &Path, pipeline: &str) -> PathBuf {
    state_dir.join(format!("process-{pipeline}.json"))
}

fn state_error(path: &Path, message: impl Into<String>) -> ProcessError {
    ProcessError::State {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads the state file; `None` when there is none.
pub fn read(path: &Path) -> Result<Option<StateFile>, ProcessError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(state_error(path, format!("cannot read: {e}"))),
    };
    let state: StateFile = serde_json::from_str(&text).map_err(|e| {
        state_error(
            path,
            format!(
                "not a valid state file ({e}); check that no worker it lists still runs, \
                 then remove it"
            ),
        )
    })?;
    if state.schema != STATE_SCHEMA {
        return Err(state_error(
            path,
            format!("schema {} is not {STATE_SCHEMA}", state.schema),
        ));
    }
    Ok(Some(state))
}

/// Writes the state file atomically (temporary file, fsync, rename).
pub fn write(path: &Path, state: &StateFile) -> Result<(), ProcessError> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| state_error(path, format!("cannot create its directory: {e}")))?;
    }
    let text = serde_json::to_vec_pretty(state)
        .map_err(|e| state_error(path, format!("cannot encode: {e}")))?;
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary)
        .map_err(|e| state_error(path, format!("cannot create {}: {e}", temporary.display())))?;
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .map_err(|e| state_error(path, format!("cannot write {}: {e}", temporary.display())))?;
    std::fs::rename(&temporary, path).map_err(|e| state_error(path, format!("cannot replace: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_round_trips_and_garbage_is_named() {
        let dir =
            std::env::temp_dir().join(format!("infadapt-process-state-{}", std::process::id()));
        let path = state_path(&dir, "p");
        let state = StateFile {
            schema: STATE_SCHEMA,
            boot_id: "b".into(),
            writer_pid: 1,
            workers: vec![WorkerRecord {
                stage: "s".into(),
                variant: "v".into(),
                batch: 1,
                cores: 1,
                cpus: vec![0],
                gpu: None,
                gpu_uuid: None,
                port: 20_000,
                pid: 42,
                start_ticks: 7,
                argv: vec!["w".into()],
                url: "http://127.0.0.1:20000/infer".into(),
                health_url: "http://127.0.0.1:20000/healthz".into(),
                state: "ready".into(),
            }],
        };
        assert_eq!(read(&path).unwrap(), None);
        write(&path, &state).unwrap();
        assert_eq!(read(&path).unwrap(), Some(state));
        std::fs::write(&path, "{ not json").unwrap();
        let error = read(&path).unwrap_err().to_string();
        assert!(error.contains(&path.display().to_string()) && error.contains("not a valid"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
