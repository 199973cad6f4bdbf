//! Integration tests that run the real infadaptd binary.

mod plan_cli;
mod profiles_import;
mod forecast_cli;
