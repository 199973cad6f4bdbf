//! Integration tests that run the real infadaptd binary.

use std::sync::{Mutex, MutexGuard};

mod assets_cli;
mod backend_check;
mod completions_cli;
mod crash;
mod daemon;
mod demo_plot;
mod dry_run;
mod examples;
mod fault_server;
mod faults;
mod forecast_cli;
mod hostile_http;
mod logging;
mod lstm_run;
mod metrics;
mod no_debug_output;
mod observations;
mod one_loop;
mod packaging;
mod pause;
mod plan_cli;
mod plugin_trust;
mod plugins;
mod process;
mod profile_cli;
mod profiles_import;
mod rayserve;
mod real_data;
mod replay;
mod simulate_cli;
mod support;
mod torchserve;
mod trace_windows;
mod triton;
mod watchdog;

/// Real servers (Triton, TorchServe) saturate two cores: the tests that start one take this
/// lock, so only one runs at a time whichever suite it belongs to.
pub(crate) fn one_real_server_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
