//! `infadaptd validate --config FILE [--plugin-dir DIR]...`: reads and checks a daemon
//! configuration completely (catalogs, pipelines, and each backend's own keys through its
//! plugin's config check, with the plugin loaded under the same trust checks as `run`) and
//! lists every problem; exit 0 or 64. Used as `ExecStartPre` and before a reload.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::commands::stderr::{self, CommandFailure};
use crate::config::{DEFAULT_CONFIG_PATH, load_config_strict};
use crate::outln;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The configuration file to check.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Look for backend plugin libraries in DIR instead of the file's `[daemon] plugin_dirs`
    /// (repeatable), e.g. to check a configuration against a build's plugins before
    /// installing them.
    #[arg(long = "plugin-dir", value_name = "DIR")]
    pub plugin_dirs: Vec<PathBuf>,
}

pub fn run(args: &ValidateArgs) -> anyhow::Result<()> {
    let plugin_dirs = (!args.plugin_dirs.is_empty()).then(|| args.plugin_dirs.clone());
    match load_config_strict(&args.config, plugin_dirs) {
        Ok(config) => {
            for warning in &config.warnings {
                stderr::warning_in(args.config.display(), warning);
            }
            outln!(
                "{}: ok ({} pipeline{}: {})",
                args.config.display(),
                config.pipelines.len(),
                if config.pipelines.len() == 1 { "" } else { "s" },
                config
                    .pipelines
                    .iter()
                    .map(|p| format!("{} [{}]", p.name, p.backend.kind))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        Err(diagnostics) => bail!(CommandFailure::usage().diagnostics(&diagnostics)),
    }
}
