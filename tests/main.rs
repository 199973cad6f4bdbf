//! Integration tests that run the real infadaptd binary.

mod daemon;
mod plan_cli;
mod plugins;
mod profiles_import;
mod forecast_cli;
mod simulate_cli;
