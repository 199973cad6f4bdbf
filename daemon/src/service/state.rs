//! Persisted state per pipeline: the last applied plan and the forecaster, and the set of
//! paused pipelines (`paused.json`), written atomically (temporary file, fsync, rename, fsync
//! of the directory) so that a crash leaves the old or the new file.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use infadapt_model::{Pipeline, Plan};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Version of the state file format.
pub const STATE_SCHEMA: u32 = 1;

/// What is kept for one pipeline across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineState {
    pub schema: u32,
    pub pipeline: String,
    /// The plan last applied to the backend.
    pub plan: Plan,
    /// Wall-clock time it was saved, seconds since the epoch.
    pub saved_unix_s: u64,
    /// The loop's own clock when saved (seconds); a restart continues from here plus the
    /// wall time that passed, so the forecaster sees the downtime as a gap.
    #[serde(default)]
    pub clock_s: f64,
    /// The forecaster's learned state, when it could be encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecaster: Option<serde_json::Value>,
}

/// Why state could not be read or written.
#[derive(Debug, Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a state file: {message}")]
    Format { path: PathBuf, message: String },
}

/// The state file of `pipeline` in `dir`.
pub fn state_path(dir: &Path, pipeline: &str) -> PathBuf {
    let safe: String = pipeline
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("pipeline-{safe}.json"))
}

/// Writes `state` atomically.
pub fn save(dir: &Path, state: &PipelineState) -> Result<PathBuf, StateError> {
    let path = state_path(dir, &state.pipeline);
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomically(dir, path, &bytes)
}

/// Replaces `path` (in `dir`) with `bytes`: temporary file, fsync, rename, fsync of `dir`.
fn write_atomically(dir: &Path, path: PathBuf, bytes: &[u8]) -> Result<PathBuf, StateError> {
    let io = |source| StateError::Io {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut file = File::create(&tmp).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    fs::rename(&tmp, &path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(path)
}

/// Reads the state of `pipeline`; `Ok(None)` when there is none.
pub fn load(dir: &Path, pipeline: &str) -> Result<Option<PipelineState>, StateError> {
    let path = state_path(dir, pipeline);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Io { path, source }),
    };
    let state: PipelineState = serde_json::from_slice(&bytes).map_err(|e| StateError::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if state.schema != STATE_SCHEMA {
        return Err(StateError::Format {
            path,
            message: format!("schema {} (this daemon reads {STATE_SCHEMA})", state.schema),
        });
    }
    Ok(Some(state))
}

/// The file listing the paused pipelines in `dir`.
pub fn paused_path(dir: &Path) -> PathBuf {
    dir.join("paused.json")
}

/// The paused pipelines as kept on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PausedFile {
    schema: u32,
    paused: BTreeSet<String>,
}

/// Writes the set of paused pipelines atomically.
pub fn save_paused(dir: &Path, paused: &BTreeSet<String>) -> Result<PathBuf, StateError> {
    let path = paused_path(dir);
    let file = PausedFile {
        schema: STATE_SCHEMA,
        paused: paused.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| StateError::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomically(dir, path, &bytes)
}

/// Reads the set of paused pipelines; empty when there is no file.
pub fn load_paused(dir: &Path) -> Result<BTreeSet<String>, StateError> {
    let path = paused_path(dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(source) => return Err(StateError::Io { path, source }),
    };
    let file: PausedFile = serde_json::from_slice(&bytes).map_err(|e| StateError::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if file.schema != STATE_SCHEMA {
        return Err(StateError::Format {
            path,
            message: format!("schema {} (this daemon reads {STATE_SCHEMA})", file.schema),
        });
    }
    Ok(file.paused)
}

/// Whether `plan` names exactly the stages of `pipeline` and only variants they offer.
pub fn plan_fits(plan: &Plan, pipeline: &Pipeline) -> bool {
    plan.stages.len() == pipeline.stages.len()
        && plan.stages.iter().zip(&pipeline.stages).all(|(p, s)| {
            p.stage == s.name
                && !p.assignments.is_empty()
                && p.assignments
                    .iter()
                    .all(|a| s.variant(&a.variant).is_some())
        })
}

/// Seconds since the epoch, 0 if the clock is before it.
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_atomically() {
        let dir = std::env::temp_dir().join(format!("infadaptd-state-{}", std::process::id()));
        let state = PipelineState {
            schema: STATE_SCHEMA,
            pipeline: "a/b".into(),
            plan: Plan::default(),
            saved_unix_s: 5,
            clock_s: 120.0,
            forecaster: Some(serde_json::json!({"kind": "test"})),
        };
        let path = save(&dir, &state).expect("saved");
        assert!(path.ends_with("pipeline-a_b.json"));
        assert_eq!(load(&dir, "a/b").expect("read"), Some(state));
        assert_eq!(load(&dir, "other").expect("read"), None);
        assert_eq!(load_paused(&dir).expect("no file"), BTreeSet::new());
        let paused: BTreeSet<String> = ["a/b".to_owned(), "c".to_owned()].into();
        save_paused(&dir, &paused).expect("saved");
        assert_eq!(load_paused(&dir).expect("read"), paused);
        let _ = fs::remove_dir_all(dir);
    }
}
