//! The `infadaptd` library: command line, config and problem files, and the commands the
//! binary runs. Everything that touches files, the terminal or the process lives here;
//! the controllers it calls are pure.

pub mod cli;
pub mod cmd_assets;
pub mod cmd_completions;
pub mod cmd_forecast;
pub mod cmd_pause;
pub mod cmd_plan;
pub mod cmd_profile;
pub mod cmd_profiles;
pub mod cmd_run;
pub mod cmd_simulate;
pub mod cmd_validate;
pub mod config;
pub mod exit;
pub mod http_server;
pub mod loadgen;
pub mod output;
pub mod plugin_host;
pub mod problem_file;
pub mod profile_import;
pub mod router;
pub mod service;
