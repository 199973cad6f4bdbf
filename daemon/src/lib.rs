//! The `infadaptd` library: command line, config and problem files, and the commands the
//! binary runs. Everything that touches files, the terminal or the process lives here;
//! the controllers it calls are pure.

pub mod api;
pub mod commands;
pub mod config;
pub mod http_server;
pub mod plugin_host;
pub mod problem_file;
pub mod profile_import;
pub mod router;
pub mod service;
