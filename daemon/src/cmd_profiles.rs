//! `infadaptd profiles`: import measured profiles into catalogs.
use clap::Subcommand;
#[derive(Debug, Subcommand)]
pub enum ProfilesCommand { Import }
/// Runs the command.
pub fn run(_cmd: &ProfilesCommand) -> anyhow::Result<u8> { anyhow::bail!("not yet") }
