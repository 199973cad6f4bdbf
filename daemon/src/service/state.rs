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
                && p.assignments.iter().all(|a| {
                    s.variant(&a.variant).is_some()
                        && s.batch_sizes.contains(&a.batch)
                        && s.core_options.contains(&a.cores)
                        && a.replicas <= s.max_replicas
                        && a.share.is_finite()
                        && (0.0..=1.0).contains(&a.share)
                })
                && p.assignments
                    .iter()
                    .map(|a| u64::from(a.replicas))
                    .sum::<u64>()
                    >= 1
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
    fn a_saved_plan_fits_only_within_the_stage_options() {
        use infadapt_model::{Assignment, StagePlan};
        let etc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc");
        let text = "[[pipeline]]\nname = \"p\"\ncatalog = \"catalogs/resnet-cpu.toml\"\n\
                    slo_ms = 750\n[[pipeline.stage]]\nname = \"classify\"\n\
                    variants = [\"resnet18\"]\nbatch_sizes = [1, 4]\ncore_options = [1, 2]\n\
                    max_replicas = 8\n[pipeline.backend]\ntype = \"sim\"\n";
        let config = crate::config::parse_config("c.toml", text, &etc, &mut |r: &str| {
            crate::problem_file::read_catalog(&etc.join(r))
        })
        .expect("valid");
        let pipeline = &config.pipelines[0].control.problem.pipeline;
        let plan = |batch: u32, cores: u32, replicas: u32, share: f64| Plan {
            stages: vec![StagePlan {
                stage: "classify".to_owned(),
                assignments: vec![Assignment {
                    variant: "resnet18".to_owned(),
                    batch,
                    cores,
                    replicas,
                    share,
                }],
            }],
        };
        assert!(plan_fits(&plan(4, 2, 8, 1.0), pipeline));
        for (label, bad) in [
            ("replicas beyond max_replicas", plan(1, 1, u32::MAX, 1.0)),
            ("no replica at all", plan(1, 1, 0, 1.0)),
            ("a batch size not offered", plan(0, 1, 1, 1.0)),
            ("a core count not offered", plan(1, 3, 1, 1.0)),
            ("a share that is not one", plan(1, 1, 1, f64::NAN)),
        ] {
            assert!(!plan_fits(&bad, pipeline), "{label} was taken");
        }
    }

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
