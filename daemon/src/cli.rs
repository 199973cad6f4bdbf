//! Command-line definition and dispatch for `infadaptd`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{
    cmd_assets, cmd_forecast, cmd_plan, cmd_profiles, cmd_run, cmd_simulate, cmd_validate, exit,
};

/// Autoscaler for model-serving pipelines: forecasts load, plans variants, batch sizes,
/// cores and replicas under a latency SLO, and applies the plan through backend plugins.
#[derive(Debug, Parser)]
#[command(name = "infadaptd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Solve one planning problem (TOML) and print the chosen configuration.
    Plan(cmd_plan::PlanArgs),
    /// Manage profile catalogs.
    #[command(subcommand)]
    Profiles(cmd_profiles::ProfilesCommand),
    /// Train, evaluate and compare load forecasters.
    #[command(subcommand)]
    Forecast(cmd_forecast::ForecastCommand),
    /// Compare autoscaling policies on a simulated host (embedded scenario by default).
    Simulate(cmd_simulate::SimulateArgs),
    /// Run the autoscaler service (or, with --demo, the embedded demonstration).
    Run(cmd_run::RunArgs),
    /// Check a daemon configuration file and list every problem (exit 64 if any).
    Validate(cmd_validate::ValidateArgs),
    /// Write the man pages and shell completions (used when building packages).
    #[command(hide = true)]
    GenerateAssets(cmd_assets::AssetsArgs),
}

/// Parses arguments, runs the command and maps its outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Plan(args) => cmd_plan::run(&args),
        Command::Profiles(cmd) => cmd_profiles::run(&cmd),
        Command::Forecast(cmd) => cmd_forecast::run(&cmd),
        Command::Simulate(args) => cmd_simulate::run(&args),
        Command::Run(args) => cmd_run::run(&args),
        Command::Validate(args) => cmd_validate::run(&args),
        Command::GenerateAssets(args) => cmd_assets::run(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
