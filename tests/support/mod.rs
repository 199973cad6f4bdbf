//! Helpers every part of the integration target uses: running the `infadaptd` binary, the
//! daemon configuration texts (`configs`), the daemon as a service (`service`), and the
//! workspace's test support (repository root, scratch directories, free ports, polling).

mod configs;
mod service;

use std::process::{Command, Output};

pub(crate) use configs::{bare_pipeline_text, config_text, daemon_table, pipeline_text};
pub(crate) use infadapt_testkit::{free_port, repo_root, scratch_dir, wait_until};
pub(crate) use service::{
    Daemon, NotifySink, http_get, metric, pipeline_status, run_command, run_validate, scratch,
    status_of, wait_notify,
};

/// Runs the built `infadaptd` with `args` and waits for it.
pub(crate) fn infadaptd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .args(args)
        .output()
        .expect("run infadaptd")
}
