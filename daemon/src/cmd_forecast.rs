//! `infadaptd forecast`: backtest and train load forecasters on a trace.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ForecastCommand {
    /// Rolling-origin backtest of a forecaster on a trace.
    Backtest,
}

/// Runs a `forecast` subcommand; returns the exit code.
pub fn run(cmd: &ForecastCommand) -> anyhow::Result<u8> {
    match cmd {
        ForecastCommand::Backtest => anyhow::bail!("forecast backtest is not built yet"),
    }
}
