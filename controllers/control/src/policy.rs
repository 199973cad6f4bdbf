//! The interface every autoscaling policy implements, ours and the ones it is compared with.

use infadapt_model::Plan;

use crate::{Decision, Observation, Pulse};

/// An autoscaling policy driven by a harness (the simulator's virtual clock or the daemon's
/// timer): every `interval_s` seconds it gets an observation and answers with a decision.
pub trait Policy {
    /// Short name, e.g. `infadapt`, `ipa`, `hpa`.
    fn name(&self) -> &str;
    /// Seconds between decisions.
    fn interval_s(&self) -> f64;
    /// The configuration to start from.
    fn initial_plan(&self) -> Plan;
    /// Observes the last period and decides what to run next. Never panics on data: when
    /// it cannot plan it keeps `observation.deployed` and says why in `Decision::error`.
    fn decide(&mut self, observation: &Observation) -> Decision;
    /// Looks at the host between ticks (every second or so) and answers with a decision
    /// to apply at once, or `None` to wait for the next tick. The default never reacts
    /// (policies that decide at ticks only, as the published baselines do).
    fn react(&mut self, pulse: &Pulse) -> Option<Decision> {
        let _ = pulse;
        None
    }
}
