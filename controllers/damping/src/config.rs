//! Settings of the stability layer and of the headroom feedback, with documented defaults.

use serde::{Deserialize, Serialize};

use crate::DampingError;

/// How the [`crate::Damper`] holds back planned changes. Every field has a default (see
/// [`DampingConfig::default`]); [`DampingConfig::disabled`] passes every proposal through.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DampingConfig {
    /// `false` passes every proposal through unchanged (the undamped baselines).
    pub enabled: bool,
    /// Scale-down stabilization window, seconds: a stage's capacity only falls to the
    /// highest capacity recommended within this window (the horizontal autoscaler's
    /// stabilization-window rule). Default 120 s (12 ticks of 10 s): longer than the
    /// 10-tick no-reversal horizon, so an increase is never undone within 10 ticks.
    pub stabilization_window_s: f64,
    /// Relative capacity change of a stage below which an optional change that keeps the
    /// same variants and cores is ignored (hysteresis). Default 0.1 (10 %).
    pub deadband_fraction: f64,
    /// Replica change (per stage, same variants and cores) at or below which an optional
    /// change is ignored. Default 0 (only the relative deadband applies): on small
    /// deployments one replica is a large share of the capacity.
    pub deadband_replicas: u32,
    /// Minimum time between two variant (or cores-per-replica) switches of one stage,
    /// seconds. Default 120 s. A switch needed to carry the load is replaced by scaling
    /// the deployed variant when that carries it, and otherwise let through.
    pub min_dwell_s: f64,
    /// Most replicas an *optional* increase may add to one stage per tick (an increase
    /// needed to carry the load is never limited). `None`: no limit. Default `Some(8)`.
    /// With [`DampingConfig::max_scale_up_percent`] set too, the two combine by
    /// [`DampingConfig::scale_up_select_policy`].
    pub max_replicas_added_per_tick: Option<u32>,
    /// Scale-up stabilization window, seconds: an *optional* increase of a stage only rises
    /// to the lowest capacity recommended within this window (the horizontal autoscaler's
    /// `behavior.scaleUp.stabilizationWindowSeconds`). An increase needed to carry the load
    /// is never held. Default 0: increases go at once.
    pub scale_up_stabilization_window_s: f64,
    /// Rate policy in percent: an *optional* increase adds at most this share of the
    /// stage's deployed replicas per tick (rounded up, at least one replica), like the
    /// horizontal autoscaler's `Percent` policy with the control period as its period.
    /// `None`: no percent policy. Default `None`.
    pub max_scale_up_percent: Option<f64>,
    /// How the replica and the percent policy combine when both are set: `max` (the more
    /// permissive, the horizontal autoscaler's default `selectPolicy: Max`) or `min` (the
    /// stricter). Default `max`.
    pub scale_up_select_policy: SelectPolicy,
    /// Most replicas a decrease may remove from one stage per tick (same variants and
    /// cores; a variant switch replaces the whole stage). `None`: no limit. Default
    /// `None`: a decrease only comes after the load has been lower for a whole window, so
    /// a limit would only spread it over more reconfigurations (and break settling within
    /// 2 ticks); set it where draining many replicas at once hurts the backend.
    pub max_replicas_removed_per_tick: Option<u32>,
    /// Smallest objective gain (the planner's units: α·accuracy − costs, change cost
    /// included) for which an *optional* switch of variants or cores goes ahead. A proposal
    /// that switches a stage is weighed against the deployed variants and cores re-sized
    /// for the same load; if that keeps the load within the SLO and loses less than this,
    /// it is kept. Near a load where two configurations score alike, noise in the forecast
    /// otherwise alternates between them every dwell time. 0 disables it. Default 0.005.
    pub min_switch_gain: f64,
}

/// Which of several scale-up rate policies applies (the horizontal autoscaler's
/// `selectPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectPolicy {
    /// The policy that allows the larger change.
    #[default]
    Max,
    /// The policy that allows the smaller change.
    Min,
}

impl SelectPolicy {
    /// The configuration file's name of the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            SelectPolicy::Max => "max",
            SelectPolicy::Min => "min",
        }
    }
}

/// Default of [`DampingConfig::min_switch_gain`].
pub const DEFAULT_MIN_SWITCH_GAIN: f64 = keys::MIN_SWITCH_GAIN.number_default();

impl Default for DampingConfig {
    fn default() -> Self {
        DampingConfig::DEFAULT
    }
}

impl DampingConfig {
    /// The defaults: each its key's ([`keys`]), the one place they are written.
    pub const DEFAULT: DampingConfig = DampingConfig {
        enabled: keys::ENABLED.flag_default(),
        stabilization_window_s: keys::STABILIZATION_WINDOW_S.number_default(),
        deadband_fraction: keys::DEADBAND_FRACTION.number_default(),
        deadband_replicas: keys::DEADBAND_REPLICAS.count_default(),
        min_dwell_s: keys::MIN_DWELL_S.number_default(),
        max_replicas_added_per_tick: keys::MAX_REPLICAS_ADDED_PER_TICK.optional_count_default(),
        scale_up_stabilization_window_s: keys::SCALE_UP_STABILIZATION_WINDOW_S.number_default(),
        max_scale_up_percent: keys::MAX_SCALE_UP_PERCENT.optional_number_default(),
        // Its key's default is in words; a test holds the two together.
        scale_up_select_policy: SelectPolicy::Max,
        max_replicas_removed_per_tick: keys::MAX_REPLICAS_REMOVED_PER_TICK.optional_count_default(),
        min_switch_gain: DEFAULT_MIN_SWITCH_GAIN,
    };

    /// No damping at all: the planner's proposal is applied as it is (IPA's behaviour).
    pub fn disabled() -> Self {
        DampingConfig {
            enabled: false,
            stabilization_window_s: 0.0,
            deadband_fraction: 0.0,
            deadband_replicas: 0,
            min_dwell_s: 0.0,
            max_replicas_added_per_tick: None,
            scale_up_stabilization_window_s: 0.0,
            max_scale_up_percent: None,
            scale_up_select_policy: SelectPolicy::Max,
            max_replicas_removed_per_tick: None,
            min_switch_gain: 0.0,
        }
    }

    /// Only a scale-down delay of `ticks` decisions of `interval_s` seconds: a decrease is
    /// skipped `ticks` times and applied when it has been recommended `ticks + 1` times in
    /// a row (InfAdapter's "scale-down skipped up to 4 times" is
    /// `skip_scale_down(4, 30.0)`). With no history yet (the first tick), a decrease goes
    /// at once.
    pub fn skip_scale_down(ticks: u32, interval_s: f64) -> Self {
        DampingConfig {
            enabled: true,
            stabilization_window_s: f64::from(ticks) * interval_s,
            ..DampingConfig::disabled()
        }
    }

    /// Most replicas an optional increase may add per tick to a stage that runs
    /// `deployed_replicas` now: the replica policy and the percent policy combined by
    /// [`DampingConfig::scale_up_select_policy`]; `None` when neither is set.
    pub fn scale_up_limit(&self, deployed_replicas: u64) -> Option<u64> {
        let by_replicas = self.max_replicas_added_per_tick.map(u64::from);
        let by_percent = self.max_scale_up_percent.map(|percent| {
            let share = (deployed_replicas as f64 * percent / 100.0).ceil();
            // Saturating: a share beyond u64 is no limit in practice.
            if share >= u64::MAX as f64 {
                u64::MAX
            } else {
                (share as u64).max(1)
            }
        });
        match (by_replicas, by_percent) {
            (Some(a), Some(b)) => Some(match self.scale_up_select_policy {
                SelectPolicy::Max => a.max(b),
                SelectPolicy::Min => a.min(b),
            }),
            (a, b) => a.or(b),
        }
    }

    /// Checks every value is in its key's range ([`keys`]), with the message the
    /// configuration reader gives.
    pub fn validate(&self) -> Result<(), DampingError> {
        let numbers = [
            (
                &keys::STABILIZATION_WINDOW_S,
                Some(self.stabilization_window_s),
            ),
            (
                &keys::SCALE_UP_STABILIZATION_WINDOW_S,
                Some(self.scale_up_stabilization_window_s),
            ),
            (&keys::MAX_SCALE_UP_PERCENT, self.max_scale_up_percent),
            (&keys::MIN_DWELL_S, Some(self.min_dwell_s)),
            (&keys::MIN_SWITCH_GAIN, Some(self.min_switch_gain)),
            (&keys::DEADBAND_FRACTION, Some(self.deadband_fraction)),
            (
                &keys::DEADBAND_REPLICAS,
                Some(f64::from(self.deadband_replicas)),
            ),
            (
                &keys::MAX_REPLICAS_ADDED_PER_TICK,
                self.max_replicas_added_per_tick.map(f64::from),
            ),
            (
                &keys::MAX_REPLICAS_REMOVED_PER_TICK,
                self.max_replicas_removed_per_tick.map(f64::from),
            ),
        ];
        for (key, value) in numbers {
            if let Some(value) = value {
                key.check(value)
                    .map_err(|problem| DampingError::InvalidConfig {
                        field: key.name,
                        problem: problem.to_string(),
                    })?;
            }
        }
        Ok(())
    }
}

/// Gains and bounds of the PI controller that corrects the provisioning headroom from
/// observed SLO misses and queue growth (see [`crate::HeadroomController`]).
///
/// The error signal per tick is `e = clamp((miss_rate − target)/target + queue_term,
/// −1, max_error)`; the headroom is `clamp(1 + kp·e + I, 1, max_headroom)` with the
/// integrator `I ∈ [0, max_integral]` advanced by `ki·e·Δt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadroomConfig {
    /// `false` keeps the headroom at 1 (no feedback).
    pub enabled: bool,
    /// SLO-miss rate the loop tolerates (misses + drops over finished requests). Default
    /// 0.01.
    pub target_miss_rate: f64,
    /// Proportional gain per unit of normalised error. Default 0.02: a miss rate 5× the
    /// target (e = 4) adds 8 % at once.
    pub kp: f64,
    /// Integral gain per second per unit of error. Default 0.002: at 10-s ticks the
    /// integrator moves at most `0.002·10·max_error` = 0.08 per tick upwards and 0.02 per
    /// tick downwards, so it needs ≥ 4 ticks to cross its range, slower than the cold
    /// starts the plant needs to respond.
    pub ki: f64,
    /// Upper clamp of the normalised error. Default 4.
    pub max_error: f64,
    /// Queue growth, as a fraction of the window's arrivals, that counts as one unit of
    /// error. Default 0.02 (2 % of the arrivals left behind in the queues).
    pub queue_growth_unit: f64,
    /// Upper bound of the integrator. Default 0.3.
    pub max_integral: f64,
    /// Upper bound of the headroom. Default 1.5.
    pub max_headroom: f64,
}

impl Default for HeadroomConfig {
    fn default() -> Self {
        HeadroomConfig {
            enabled: true,
            target_miss_rate: 0.01,
            kp: 0.02,
            ki: 0.002,
            max_error: 4.0,
            queue_growth_unit: 0.02,
            max_integral: 0.3,
            max_headroom: 1.5,
        }
    }
}

impl HeadroomConfig {
    /// No feedback: the headroom stays 1.
    pub fn disabled() -> Self {
        HeadroomConfig {
            enabled: false,
            ..HeadroomConfig::default()
        }
    }

    /// Checks every value is in range.
    pub fn validate(&self) -> Result<(), DampingError> {
        let positive = |field: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(DampingError::InvalidConfig {
                    field,
                    problem: format!("must be a positive number, got {v}"),
                })
            }
        };
        positive("target_miss_rate", self.target_miss_rate)?;
        positive("max_error", self.max_error)?;
        positive("queue_growth_unit", self.queue_growth_unit)?;
        non_negative("kp", self.kp)?;
        non_negative("ki", self.ki)?;
        non_negative("max_integral", self.max_integral)?;
        if !(self.max_headroom.is_finite() && self.max_headroom >= 1.0) {
            return Err(DampingError::InvalidConfig {
                field: "max_headroom",
                problem: format!("must be a number ≥ 1, got {}", self.max_headroom),
            });
        }
        Ok(())
    }
}

fn non_negative(field: &'static str, value: f64) -> Result<(), DampingError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(DampingError::InvalidConfig {
            field,
            problem: format!("must be a finite number ≥ 0, got {value}"),
        })
    }
}

/// The keys of the `[pipeline.damping]` table, one definition each: its type, default,
/// range and meaning. `DampingConfig::validate` checks against these ranges, the daemon reads the
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
        doc: "Damp decisions (off: apply every proposal).",
    };

    /// `stabilization_window_s`.
    pub const STABILIZATION_WINDOW_S: KeySpec = KeySpec {
        name: "stabilization_window_s",
        kind: "number (s)",
        integer: false,
        default: KeyDefault::Number(120.0),
        bounds: Some(Bounds::DURATION_S),
        doc: "Scale-down takes the largest recommendation of this window.",
    };

    /// `scale_up_stabilization_window_s`.
    pub const SCALE_UP_STABILIZATION_WINDOW_S: KeySpec = KeySpec {
        name: "scale_up_stabilization_window_s",
        kind: "number (s)",
        integer: false,
        default: KeyDefault::Number(0.0),
        bounds: Some(Bounds::DURATION_S),
        doc: "An optional scale-up takes the smallest recommendation of this window (a needed increase goes at once).",
    };

    /// `deadband_fraction`.
    pub const DEADBAND_FRACTION: KeySpec = KeySpec {
        name: "deadband_fraction",
        kind: "number",
        integer: false,
        default: KeyDefault::Number(0.1),
        bounds: Some(Bounds::below(0.0, 1.0)),
        doc: "Capacity changes smaller than this share are not made.",
    };

    /// `deadband_replicas`.
    pub const DEADBAND_REPLICAS: KeySpec = KeySpec {
        name: "deadband_replicas",
        kind: "integer",
        integer: true,
        default: KeyDefault::Number(0.0),
        bounds: Some(Bounds::closed(0.0, 100_000.0)),
        doc: "Replica changes up to this many are not made.",
    };

    /// `min_dwell_s`.
    pub const MIN_DWELL_S: KeySpec = KeySpec {
        name: "min_dwell_s",
        kind: "number (s)",
        integer: false,
        default: KeyDefault::Number(120.0),
        bounds: Some(Bounds::DURATION_S),
        doc: "Least time between two variant switches.",
    };

    /// `max_replicas_added_per_tick`.
    pub const MAX_REPLICAS_ADDED_PER_TICK: KeySpec = KeySpec {
        name: "max_replicas_added_per_tick",
        kind: "integer",
        integer: true,
        default: KeyDefault::Number(8.0),
        bounds: Some(Bounds::COUNT),
        doc: "Most replicas one tick adds.",
    };

    /// `max_replicas_removed_per_tick`.
    pub const MAX_REPLICAS_REMOVED_PER_TICK: KeySpec = KeySpec {
        name: "max_replicas_removed_per_tick",
        kind: "integer",
        integer: true,
        default: KeyDefault::Text("no limit"),
        bounds: Some(Bounds::COUNT),
        doc: "Most replicas one tick removes.",
    };

    /// `max_scale_up_percent`.
    pub const MAX_SCALE_UP_PERCENT: KeySpec = KeySpec {
        name: "max_scale_up_percent",
        kind: "number (%)",
        integer: false,
        default: KeyDefault::Text("no limit"),
        bounds: Some(Bounds::above(0.0, 100_000.0)),
        doc: "Most replicas one tick adds, as a percentage of the stage's replicas (optional increases only).",
    };

    /// `scale_up_select_policy`.
    pub const SCALE_UP_SELECT_POLICY: KeySpec = KeySpec {
        name: "scale_up_select_policy",
        kind: "`max` or `min`",
        integer: false,
        default: KeyDefault::Text("`max`"),
        bounds: None,
        doc: "How the replica and percent limits combine: the more permissive (`max`) or the stricter (`min`).",
    };

    /// `min_switch_gain`.
    pub const MIN_SWITCH_GAIN: KeySpec = KeySpec {
        name: "min_switch_gain",
        kind: "number",
        integer: false,
        default: KeyDefault::Number(0.005),
        bounds: Some(Bounds::AMOUNT),
        doc: "Least objective gain (accumulated over ticks) worth a switch.",
    };

    /// Every key of the table, in the reference's order.
    pub const ALL: &[KeySpec] = &[
        ENABLED,
        STABILIZATION_WINDOW_S,
        SCALE_UP_STABILIZATION_WINDOW_S,
        DEADBAND_FRACTION,
        DEADBAND_REPLICAS,
        MIN_DWELL_S,
        MAX_REPLICAS_ADDED_PER_TICK,
        MAX_REPLICAS_REMOVED_PER_TICK,
        MAX_SCALE_UP_PERCENT,
        SCALE_UP_SELECT_POLICY,
        MIN_SWITCH_GAIN,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_the_policy_is_its_key_s_default() {
        let defaults = DampingConfig::default();
        assert_eq!(
            format!("`{}`", defaults.scale_up_select_policy.as_str()),
            keys::SCALE_UP_SELECT_POLICY.default.to_string()
        );
        assert_eq!(defaults.scale_up_select_policy, SelectPolicy::default());
        assert_eq!(defaults.validate(), Ok(()));
        assert_eq!(DampingConfig::disabled().validate(), Ok(()));
    }

    #[test]
    fn validate_refuses_a_value_outside_its_key_s_range_with_the_reader_s_message() {
        let config = DampingConfig {
            stabilization_window_s: -1.0,
            ..DampingConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid damping configuration: stabilization_window_s must be in [0, 86400], got -1"
        );
        let config = DampingConfig {
            max_replicas_removed_per_tick: Some(0),
            ..DampingConfig::default()
        };
        assert!(config.validate().is_err());
        let config = DampingConfig {
            deadband_fraction: 1.0,
            ..DampingConfig::default()
        };
        assert!(config.validate().is_err());
    }
}
