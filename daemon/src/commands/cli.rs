//! Command-line definition and dispatch for `infadaptd`.

use clap::{Parser, Subcommand};

use super::{
    assets, completions, exit, forecast, pause, plan, profile, profiles, run, simulate, stderr,
    validate,
};
use crate::plugin_host;

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
    Plan(plan::PlanArgs),
    /// Measure variants on a real backend (batch × instances sweep under open-loop Poisson
    /// load) and write a profile catalog.
    Profile(profile::ProfileArgs),
    /// Manage profile catalogs.
    #[command(subcommand)]
    Profiles(profiles::ProfilesCommand),
    /// Train, evaluate and compare load forecasters.
    #[command(subcommand)]
    Forecast(forecast::ForecastCommand),
    /// Compare autoscaling policies on a simulated host (embedded scenario by default).
    Simulate(simulate::SimulateArgs),
    /// Run the autoscaler service (or, with --demo, the embedded demonstration).
    Run(run::RunArgs),
    /// Check a daemon configuration file and list every problem (exit 64 if any).
    Validate(validate::ValidateArgs),
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Ask the running service to stop applying a pipeline's decisions (it keeps deciding
    /// and keeps the deployed plan); needs `[daemon.http] token_file`.
    Pause(pause::PauseArgs),
    /// Ask the running service to apply a paused pipeline's decisions again.
    Resume(pause::PauseArgs),
}

/// `infadaptd generate-assets DIR`, the package build's helper. It is parsed apart from
/// [`Cli`] so that the man pages and completions it writes from `Cli` do not offer it.
#[derive(Debug, Parser)]
#[command(
    name = "infadaptd generate-assets",
    bin_name = "infadaptd generate-assets",
    version,
    about = "Write the man pages and shell completions (used when building packages)"
)]
struct AssetsCli {
    #[command(flatten)]
    args: assets::AssetsArgs,
}

/// The name of the packaging helper command (first argument).
pub const GENERATE_ASSETS: &str = "generate-assets";

/// Parses with `P`, or says why not and gives the exit code (0 for `--help`/`--version`).
fn parse<P: Parser>(args: impl Iterator<Item = std::ffi::OsString>) -> Result<P, u8> {
    P::try_parse_from(args).map_err(|err| {
        let code = if err.use_stderr() {
            exit::USAGE
        } else {
            exit::OK
        };
        let _ = err.print();
        code
    })
}

/// Parses arguments, runs the command, maps its outcome to an exit code and ends the
/// process with it ([`plugin_host::exit_process`]: an exit from plugin code is told apart
/// from the daemon's own).
pub fn main() -> ! {
    plugin_host::guard_exits();
    plugin_host::exit_process(run_command_line())
}

fn run_command_line() -> u8 {
    let is_assets = std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == GENERATE_ASSETS);
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == plugin_host::PROBE_COMMAND)
    {
        return match std::env::args_os().nth(2) {
            Some(library) => plugin_host::trial_load_main(std::path::Path::new(&library)),
            None => exit::USAGE,
        };
    }
    let result = if is_assets {
        match parse::<AssetsCli>(std::env::args_os().skip(1)) {
            Ok(assets) => assets::run(&assets.args),
            Err(code) => return code,
        }
    } else {
        match parse::<Cli>(std::env::args_os()) {
            Ok(cli) => dispatch(cli.command),
            Err(code) => return code,
        }
    };
    stderr::finish(result)
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Plan(args) => plan::run(&args),
        Command::Profile(args) => profile::run(&args),
        Command::Profiles(cmd) => profiles::run(&cmd),
        Command::Forecast(cmd) => forecast::run(&cmd),
        Command::Simulate(args) => simulate::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Validate(args) => validate::run(&args),
        Command::Completions(args) => completions::run(&args),
        Command::Pause(args) => pause::run(&args, true),
        Command::Resume(args) => pause::run(&args, false),
    }
}
