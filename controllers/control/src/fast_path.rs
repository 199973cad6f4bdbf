//! The fast path between ticks: what a policy sees every second ([`Pulse`]), when this
//! project's loop re-plans at once instead of waiting for the next tick
//! ([`FastPathConfig`], [`FastTrigger`]), and the arithmetic of that test.
//!
//! A control period of 10 s plus a cold start means a load step waits up to a period before
//! anything starts. The router (or the simulated host) sees arrivals and queues as they
//! happen, so every second the loop compares them with what the plan in force carries:
//!
//! - **arrivals**: the mean arrival rate of the last `window_s` seconds exceeds the load the
//!   plan in force carries within the utilisation cap by more than `sigmas` Poisson
//!   standard deviations of that mean (so one busy second of a steady load does not fire);
//! - **queue**: the requests waiting now exceed what the deployed capacity serves in
//!   `queue_slo_fraction` of the SLO, while no capacity is starting (a queue behind a
//!   change already under way drains when it is ready).
//!
//! Either re-plans for the observed rate (plus the deadband's headroom and the queue's
//! drain) through the same planner, switch-gain rule and damper as a tick; the damper never
//! holds back an increase needed to carry the planned load.

use infadapt_model::Plan;
use serde::Serialize;

use crate::ControlError;

/// What the host shows between ticks, every second or so: a cheap look at arrivals and
/// queues, not an observation of the period (the tick's [`crate::Observation`] still
/// covers every second).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Pulse {
    /// Time of the pulse, seconds, on the loop's clock.
    pub time_s: f64,
    /// Requests that arrived in each whole second since the previous pulse (or tick),
    /// oldest first; usually one value.
    pub arrivals_per_second: Vec<f64>,
    /// Requests waiting in every stage's queues now, summed.
    pub queue_len: f64,
    /// The plan in force (see [`crate::Observation::deployed`]).
    pub deployed: Plan,
}

/// Settings of the fast path. Defaults: on, 2-s window, 3 σ, half the SLO, 2 s between
/// two re-plans.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FastPathConfig {
    /// `false`: decisions only at ticks (the published baselines).
    pub enabled: bool,
    /// Seconds of arrivals averaged for the rate compared with the capacity. Default 2.
    pub window_s: f64,
    /// Poisson standard deviations of that mean above the carried load before it fires.
    /// Default 3 (about one false alarm per 700 windows of a load at exactly the cap).
    pub sigmas: f64,
    /// Share of the SLO the waiting requests may take to drain at the deployed capacity
    /// before it fires. Default 0.5.
    pub queue_slo_fraction: f64,
    /// Least time between two fast re-plans, seconds. Default 2.
    pub min_gap_s: f64,
}

impl Default for FastPathConfig {
    fn default() -> Self {
        FastPathConfig::DEFAULT
    }
}

impl FastPathConfig {
    /// The defaults: each its key's ([`keys`]), the one place they are written.
    pub const DEFAULT: FastPathConfig = FastPathConfig {
        enabled: keys::ENABLED.flag_default(),
        window_s: keys::WINDOW_S.number_default(),
        sigmas: keys::SIGMAS.number_default(),
        queue_slo_fraction: keys::QUEUE_SLO_FRACTION.number_default(),
        min_gap_s: keys::MIN_GAP_S.number_default(),
    };

    /// No fast path: decisions at ticks only.
    pub fn disabled() -> Self {
        FastPathConfig {
            enabled: false,
            ..FastPathConfig::default()
        }
    }

    /// Checks every value is in its key's range ([`keys`]), with the message the
    /// configuration reader gives.
    pub fn validate(&self) -> Result<(), ControlError> {
        for (key, value) in [
            (&keys::WINDOW_S, self.window_s),
            (&keys::SIGMAS, self.sigmas),
            (&keys::MIN_GAP_S, self.min_gap_s),
            (&keys::QUEUE_SLO_FRACTION, self.queue_slo_fraction),
        ] {
            key.check(value).map_err(|problem| {
                ControlError::InvalidConfig(format!("fast_path.{} {problem}", key.name))
            })?;
        }
        Ok(())
    }

    /// Whole seconds of the averaging window (at least one).
    pub fn window_seconds(&self) -> usize {
        (self.window_s.round() as usize).max(1)
    }
}

/// The keys of the `[pipeline.fast_path]` table, one definition each: its type, default,
/// range and meaning. `FastPathConfig::validate` checks against these ranges, the daemon reads the
/// table and documents it from them.
pub mod keys {
    use infadapt_model::settings::{Bounds, KeyDefault, KeySpec};

    /// `enabled`.
    pub const ENABLED: KeySpec = KeySpec {
        name: "enabled",
        kind: "boolean",
        integer: false,
        default: KeyDefault::Flag(true),
        bounds: None,
        doc: "Re-plan between ticks when arrivals or queues outrun the plan.",
    };

    /// `window_s`.
    pub const WINDOW_S: KeySpec = KeySpec {
        name: "window_s",
        kind: "number (s)",
        integer: false,
        default: KeyDefault::Number(2.0),
        bounds: Some(Bounds::AVERAGING_S),
        doc: "Seconds of arrivals the trigger averages.",
    };

    /// `sigmas`.
    pub const SIGMAS: KeySpec = KeySpec {
        name: "sigmas",
        kind: "number",
        integer: false,
        default: KeyDefault::Number(3.0),
        bounds: Some(Bounds::closed(0.0, 3600.0)),
        doc: "Poisson standard deviations above the planned load that trigger.",
    };

    /// `queue_slo_fraction`.
    pub const QUEUE_SLO_FRACTION: KeySpec = KeySpec {
        name: "queue_slo_fraction",
        kind: "number",
        integer: false,
        default: KeyDefault::Number(0.5),
        bounds: Some(Bounds::above(0.0, 100.0)),
        doc: "Queue longer than the capacity serves in this share of the SLO triggers.",
    };

    /// `min_gap_s`.
    pub const MIN_GAP_S: KeySpec = KeySpec {
        name: "min_gap_s",
        kind: "number (s)",
        integer: false,
        default: KeyDefault::Number(2.0),
        bounds: Some(Bounds::closed(0.0, 3600.0)),
        doc: "Least time between two fast-path decisions.",
    };

    /// Every key of the table, in the reference's order.
    pub const ALL: &[KeySpec] = &[ENABLED, WINDOW_S, SIGMAS, QUEUE_SLO_FRACTION, MIN_GAP_S];
}

/// Why the fast path fired.
#[derive(Debug, Clone, PartialEq)]
pub enum FastTrigger {
    /// Arrivals above what the plan in force carries.
    Arrivals {
        rate_rps: f64,
        carried_rps: f64,
        threshold_rps: f64,
    },
    /// A queue longer than the SLO allows.
    Queue { queue_len: f64, limit: f64 },
}

impl FastTrigger {
    /// One line for the decision record.
    pub fn describe(&self, window_s: usize) -> String {
        match self {
            FastTrigger::Arrivals {
                rate_rps,
                carried_rps,
                threshold_rps,
            } => format!(
                "fast path: {rate_rps:.1} rps arrived over the last {window_s} s, above the \
                 {carried_rps:.1} rps the plan in force carries (fires above \
                 {threshold_rps:.1})"
            ),
            FastTrigger::Queue { queue_len, limit } => format!(
                "fast path: {queue_len:.0} requests waiting, more than the {limit:.0} the \
                 deployed capacity serves within the SLO's allowance"
            ),
        }
    }
}

/// What the trigger test needs.
#[derive(Debug, Clone, Copy)]
pub struct TriggerInput {
    /// Mean arrival rate of the window, requests/s.
    pub rate_rps: f64,
    /// Seconds in the window.
    pub window_s: f64,
    /// Profiled capacity of the plan in force (smallest stage), requests/s.
    pub capacity_rps: f64,
    pub utilisation_cap: f64,
    pub queue_len: f64,
    pub slo_ms: f64,
    /// Whether capacity started by the last change is still starting.
    pub capacity_starting: bool,
}

/// The trigger test (see the module docs): `None` when nothing fires. Never fires on
/// non-finite input.
pub fn trigger(config: &FastPathConfig, input: &TriggerInput) -> Option<FastTrigger> {
    let finite = [
        input.rate_rps,
        input.window_s,
        input.capacity_rps,
        input.utilisation_cap,
        input.queue_len,
        input.slo_ms,
    ]
    .iter()
    .all(|v| v.is_finite());
    if !config.enabled || !finite || input.window_s <= 0.0 {
        return None;
    }
    let carried_rps = (input.capacity_rps * input.utilisation_cap).max(0.0);
    let threshold_rps =
        carried_rps + config.sigmas * (carried_rps.max(1.0) / input.window_s).sqrt();
    if input.rate_rps > threshold_rps {
        return Some(FastTrigger::Arrivals {
            rate_rps: input.rate_rps,
            carried_rps,
            threshold_rps,
        });
    }
    let limit =
        (input.capacity_rps.max(0.0) * input.slo_ms / 1000.0 * config.queue_slo_fraction).max(1.0);
    if !input.capacity_starting && input.queue_len > limit {
        return Some(FastTrigger::Queue {
            queue_len: input.queue_len,
            limit,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_a_bad_value_gets_its_key_s_message() {
        let defaults = FastPathConfig::default();
        assert_eq!(defaults.validate(), Ok(()));
        let bad = FastPathConfig {
            window_s: 0.5,
            ..FastPathConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            ControlError::InvalidConfig("fast_path.window_s must be in [1, 3600], got 0.5".into())
                .to_string()
        );
    }

    fn input(rate_rps: f64, queue_len: f64) -> TriggerInput {
        TriggerInput {
            rate_rps,
            window_s: 2.0,
            capacity_rps: 100.0,
            utilisation_cap: 0.8,
            queue_len,
            slo_ms: 1000.0,
            capacity_starting: false,
        }
    }

    #[test]
    fn a_load_within_the_noise_of_the_carried_load_does_not_fire() {
        let config = FastPathConfig::default();
        // Carried 80 rps; 3 σ of a 2-s mean is 3·√40 ≈ 19.
        assert_eq!(trigger(&config, &input(80.0, 0.0)), None);
        assert_eq!(trigger(&config, &input(98.0, 0.0)), None);
        match trigger(&config, &input(100.0, 0.0)) {
            Some(FastTrigger::Arrivals { threshold_rps, .. }) => {
                assert!((threshold_rps - (80.0 + 3.0 * 40f64.sqrt())).abs() < 1e-9);
            }
            other => panic!("expected an arrivals trigger, got {other:?}"),
        }
    }

    #[test]
    fn a_queue_beyond_the_slo_allowance_fires_unless_capacity_is_starting() {
        let config = FastPathConfig::default();
        // 100 rps × 1 s × 0.5 = 50 requests.
        assert_eq!(trigger(&config, &input(10.0, 50.0)), None);
        assert!(matches!(
            trigger(&config, &input(10.0, 51.0)),
            Some(FastTrigger::Queue { .. })
        ));
        let starting = TriggerInput {
            capacity_starting: true,
            ..input(10.0, 500.0)
        };
        assert_eq!(trigger(&config, &starting), None);
    }

    #[test]
    fn disabled_or_garbage_never_fires() {
        assert_eq!(trigger(&FastPathConfig::disabled(), &input(1e6, 1e6)), None);
        let config = FastPathConfig::default();
        assert_eq!(trigger(&config, &input(f64::NAN, 0.0)), None);
        assert_eq!(trigger(&config, &input(f64::INFINITY, 0.0)), None);
        let no_window = TriggerInput {
            window_s: 0.0,
            ..input(1e6, 0.0)
        };
        assert_eq!(trigger(&config, &no_window), None);
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        for bad in [
            FastPathConfig {
                window_s: 0.5,
                ..FastPathConfig::default()
            },
            FastPathConfig {
                sigmas: f64::NAN,
                ..FastPathConfig::default()
            },
            FastPathConfig {
                queue_slo_fraction: 0.0,
                ..FastPathConfig::default()
            },
            FastPathConfig {
                min_gap_s: 1e300,
                ..FastPathConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(FastPathConfig::default().validate().is_ok());
    }
}
