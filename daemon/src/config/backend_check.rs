//! The check of a pipeline's `[pipeline.backend]` keys by the backend itself, run by
//! `validate`, `run` and reloads through the configuration loader: the linked simulator's
//! rules, or a plugin's `check_config` entry (ABI version 2), loaded with the same trust
//! checks as for running it and called on a thread of its own within the backend time limit.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use infadapt_plugin_abi::ConfigProblem;

use crate::config::{DaemonSettings, PipelineConfig};
use crate::plugin_host::{PluginHost, TrialLoad};

/// What checking one pipeline's backend keys found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendCheck {
    /// The backend checked its keys; each problem names one.
    Checked(Vec<ConfigProblem>),
    /// The backend has no check (a plugin built for ABI version 1); why, for a warning.
    Unchecked(String),
    /// The check could not run (the plugin was refused, failed or hung); the message
    /// names the plugin and the call.
    Failed(String),
    /// Not checked here (configurations parsed without loading plugins).
    Skipped,
}

/// Runs the plugin's config check for `pipeline` (a plugin backend), loading the library
/// from the daemon's plugin directories.
pub fn check_plugin_backend(daemon: &DaemonSettings, pipeline: &PipelineConfig) -> BackendCheck {
    let kind = pipeline.backend.kind.clone();
    let config = crate::service::pipeline::plugin_config(pipeline).to_string();
    let timeout = Duration::from_secs_f64(daemon.backend_timeout_s.clamp(0.001, 3600.0));
    let host = Arc::new(
        PluginHost::new(daemon.plugin_dirs.clone(), crate::service::own_uid())
            .with_trial_load(TrialLoad::by_this_program(timeout)),
    );
    let (answer, answered) = mpsc::channel();
    let name = kind.clone();
    // A plugin's initialisers or check may hang: the thread is left behind, not waited for.
    let spawned = std::thread::Builder::new()
        .name(format!("check-{kind}"))
        .spawn(move || {
            let outcome = match host.library(&name) {
                Err(e) => BackendCheck::Failed(e.to_string()),
                Ok(library) => match library.check_config(&config) {
                    Ok(Some(problems)) => BackendCheck::Checked(problems),
                    Ok(None) => {
                        let (abi, _) = library.declared_abi();
                        BackendCheck::Unchecked(format!(
                            "backend `{name}`: plugin {} is built for plugin ABI version {abi}, \
                             which has no config check; its keys are checked when the pipeline \
                             creates it",
                            library.path().display()
                        ))
                    }
                    Err(e) => BackendCheck::Failed(e.to_string()),
                },
            };
            let _ = answer.send(outcome);
        });
    if let Err(e) = spawned {
        return BackendCheck::Failed(format!(
            "backend `{kind}`: cannot start the config check: {e}"
        ));
    }
    match answered.recv_timeout(timeout) {
        Ok(outcome) => outcome,
        Err(_) => BackendCheck::Failed(format!(
            "backend `{kind}`: loading the plugin and its check_config did not finish within \
             {:.1} s (backend_timeout_s)",
            timeout.as_secs_f64()
        )),
    }
}
