//! Persisted state per pipeline: the last applied plan and the forecaster, and the set of
//! paused pipelines (`paused.json`), written atomically (temporary file, fsync, rename, fsync
//! of the directory) so that a crash leaves the old or the new file.
//!
//! A file that is there but is not a state file (truncated, garbled, empty, another schema)
//! never stops a start: it is moved aside as `NAME.corrupt-UNIXTIME` (kept for a look, never
//! read again) and the error says so; the caller logs it and starts as if there were none.

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
    #[error("{path}: not a state file ({message}); moved aside to {}", moved_to.display())]
    SetAside {
        path: PathBuf,
        message: String,
        moved_to: PathBuf,
    },
}

impl StateError {
    /// Whether the file was unreadable and moved aside (a fresh one should replace it).
    pub fn was_set_aside(&self) -> bool {
        matches!(self, StateError::SetAside { .. })
    }
}

/// Moves the unreadable state file `path` aside as `NAME.corrupt-UNIXTIME` (a counter is
/// added when that name is taken) and returns the error to report; when even the rename
/// fails, the file stays and the plain format error is returned (it is ignored all the same).
fn set_aside(path: PathBuf, message: String) -> StateError {
    let stamp = unix_now_s();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut moved_to = path.with_file_name(format!("{name}.corrupt-{stamp}"));
    let mut n = 1;
    while moved_to.exists() && n < 1000 {
        moved_to = path.with_file_name(format!("{name}.corrupt-{stamp}-{n}"));
        n += 1;
    }
    match fs::rename(&path, &moved_to) {
        Ok(()) => StateError::SetAside {
            path,
            message,
            moved_to,
        },
        Err(e) => StateError::Format {
            path,
            message: format!("{message}; cannot move it aside: {e}"),
        },
    }
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
    let state: PipelineState = match serde_json::from_slice(&bytes) {
        Ok(state) => state,
        Err(e) => return Err(set_aside(path, describe(&bytes, &e))),
    };
    if state.schema != STATE_SCHEMA {
        let message = format!("schema {} (this daemon reads {STATE_SCHEMA})", state.schema);
        return Err(set_aside(path, message));
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
    let file: PausedFile = match serde_json::from_slice(&bytes) {
        Ok(file) => file,
        Err(e) => return Err(set_aside(path, describe(&bytes, &e))),
    };
    if file.schema != STATE_SCHEMA {
        let message = format!("schema {} (this daemon reads {STATE_SCHEMA})", file.schema);
        return Err(set_aside(path, message));
    }
    Ok(file.paused)
}

/// What is wrong with `bytes` that did not parse: empty, truncated, or the parser's words.
fn describe(bytes: &[u8], error: &serde_json::Error) -> String {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        "the file is empty".to_owned()
    } else if error.is_eof() {
        format!("the file ends early (truncated?): {error}")
    } else {
        error.to_string()
    }
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
        let text = "[[pipeline]]\nname = \"p\"\ncatalog = \"catalogs/resnet-synthetic.toml\"\n\
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

    #[test]
    fn unreadable_state_files_are_moved_aside_and_reported() {
        let dir = std::env::temp_dir().join(format!("infadaptd-corrupt-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let good = PipelineState {
            schema: STATE_SCHEMA,
            pipeline: "p".into(),
            plan: Plan::default(),
            saved_unix_s: 5,
            clock_s: 1.0,
            forecaster: None,
        };
        let text = serde_json::to_string(&good).expect("json");
        let newer = text.replace("\"schema\":1", "\"schema\":99");
        for (label, bytes, expected) in [
            ("empty", String::new(), "the file is empty"),
            ("truncated", text[..text.len() / 2].to_owned(), "ends early"),
            ("garbage", "\u{1}garbage{".to_owned(), "expected value"),
            ("other schema", newer, "schema 99"),
        ] {
            let path = state_path(&dir, "p");
            fs::write(&path, &bytes).expect("write");
            let err = load(&dir, "p").expect_err(label);
            assert!(err.was_set_aside(), "{label}: {err}");
            let message = err.to_string();
            assert!(message.contains("pipeline-p.json"), "{label}: {message}");
            assert!(message.contains(expected), "{label}: {message}");
            assert!(!path.exists(), "{label}: still in place");
            // Nothing is lost: the bytes are kept beside, and the next read finds no state.
            let StateError::SetAside { moved_to, .. } = &err else {
                unreachable!("checked above");
            };
            assert_eq!(
                fs::read_to_string(moved_to).expect("kept"),
                bytes,
                "{label}"
            );
            assert!(moved_to.to_string_lossy().contains(".corrupt-"), "{label}");
            assert_eq!(load(&dir, "p").expect("none now"), None, "{label}");
            save(&dir, &good).expect("a good file replaces it");
            assert_eq!(load(&dir, "p").expect("read"), Some(good.clone()));
            fs::remove_file(&path).expect("rm");
        }
        fs::write(paused_path(&dir), "{\"schema\": 1, \"paused\": [").expect("write");
        let err = load_paused(&dir).expect_err("truncated");
        assert!(
            err.was_set_aside() && err.to_string().contains("paused.json"),
            "{err}"
        );
        assert_eq!(load_paused(&dir).expect("none now"), BTreeSet::new());
        let kept = fs::read_dir(&dir)
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
            .count();
        assert_eq!(kept, 5, "every unreadable file is kept beside");
        let _ = fs::remove_dir_all(dir);
    }
}
