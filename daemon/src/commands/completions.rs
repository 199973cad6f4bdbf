//! `infadaptd completions SHELL`: prints the shell completion script for `infadaptd`, the
//! same one the packages install (both are generated from the command-line definition), for
//! users who install from source.

use std::io::Write as _;

use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use crate::commands::cli::Cli;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    infadaptd completions bash > ~/.local/share/bash-completion/completions/infadaptd\n  \
    infadaptd completions zsh > ~/.zfunc/_infadaptd\n  \
    infadaptd completions fish > ~/.config/fish/completions/infadaptd.fish")]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_name = "SHELL", value_enum)]
    pub shell: Shell,
}

/// The completion script for `shell`, generated from [`Cli`] for the program `infadaptd`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "infadaptd", &mut text);
    text
}

pub fn run(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(&script(args.shell))
        .and_then(|()| stdout.flush())
    {
        crate::commands::output::stdout_failed(error);
    }
    Ok(())
}
