//! Integration tests that run the real infadaptd binary.

mod assets_cli;
mod daemon;
mod forecast_cli;
mod packaging;
mod plan_cli;
mod plugins;
mod profiles_import;
mod simulate_cli;
