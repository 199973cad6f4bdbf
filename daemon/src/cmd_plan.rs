//! `infadaptd plan`: solve one planning problem file.
use clap::Args;
#[derive(Debug, Args)]
pub struct PlanArgs {}
/// Runs the command.
pub fn run(_args: &PlanArgs) -> anyhow::Result<u8> { anyhow::bail!("not yet") }
