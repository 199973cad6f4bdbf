//! The `infadaptd` commands: the command line (`cli`), one module per subcommand, and what
//! they share (exit codes in `exit`, what a command tells the user on stderr and the exit
//! code it fails with in `stderr`, terminal output in `output`, the load generator `profile`
//! drives).

pub mod assets;
pub mod cli;
pub mod completions;
pub mod exit;
pub mod forecast;
pub mod loadgen;
pub mod output;
pub mod pause;
pub mod plan;
pub mod profile;
pub mod profiles;
pub mod run;
pub mod simulate;
pub mod stderr;
pub mod validate;
