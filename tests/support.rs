//! Helpers every part of the integration target uses: running the `infadaptd` binary, and
//! the workspace's test support (repository root, scratch directories, free ports, polling).

use std::process::{Command, Output};

pub(crate) use infadapt_testkit::{free_port, repo_root, scratch_dir, wait_until};

/// Runs the built `infadaptd` with `args` and waits for it.
pub(crate) fn infadaptd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .args(args)
        .output()
        .expect("run infadaptd")
}
