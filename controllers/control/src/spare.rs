//! Warm spare capacity: how much ready capacity above the forecast a tick keeps so that a
//! burst is carried while the replicas the fast path starts are still loading, sized where
//! the objective says the requests it saves are worth its cores.
//!
//! A replica started when a burst is seen serves only after the detection window and the
//! variant's load time (the *lead*). Whatever arrives above the running capacity in those
//! seconds queues and, on a large burst, times out. The loop keeps the last hour of
//! per-second arrivals and, for every second `s`, the peak `p_s` of the control period that
//! ended one lead before it (what capacity ready at `s` could have been sized from). With
//! ready capacity `m · p / cap` (a plan carrying `m` times the last period's peak within the
//! utilisation cap), the share of requests above it over the history is
//!
//! ```text
//! f(m) = Σ_s max(0, ā_s − c_s − 3·√(c_s / 2)) / Σ_s ā_s,   c_s = m · p_s / cap
//! ```
//!
//! where `ā_s` is the mean of seconds `s − 1` and `s`: the excess the fast path would
//! react to (its 2-s mean beyond three Poisson standard deviations), not the scatter of
//! single seconds, which the queues and the cap absorb.
//!
//! Losing a share `f` of the requests costs `α · accuracy · f` in the planner's units (the
//! accuracy term counts every request served at that accuracy), and carrying `m · p` costs
//! `β` per core, the cores growing with the load as the deployed plan's cores per carried
//! request/s. The tick plans for the `m` that maximises `−α · acc · f(m) − β · cores(m)`
//! when that is above the forecast's load; a steady load, whose seconds rarely exceed the
//! capacity its own peak sized, keeps none.

use std::collections::VecDeque;

use serde::Serialize;

use crate::ControlError;

/// Settings of the warm spare capacity. Default: on, one hour of history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpareConfig {
    /// `false`: plan for the forecast alone (the published baselines).
    pub enabled: bool,
    /// Seconds of arrivals the burst statistics cover. Default 3600.
    pub history_s: f64,
}

impl Default for SpareConfig {
    fn default() -> Self {
        SpareConfig::DEFAULT
    }
}

impl SpareConfig {
    /// The defaults: each its key's ([`keys`]), the one place they are written.
    pub const DEFAULT: SpareConfig = SpareConfig {
        enabled: keys::ENABLED.flag_default(),
        history_s: keys::HISTORY_S.number_default(),
    };

    /// No spare capacity.
    pub fn disabled() -> Self {
        SpareConfig {
            enabled: false,
            ..SpareConfig::default()
        }
    }

    /// Checks every value is in its key's range ([`keys`]), with the message the
    /// configuration reader gives.
    pub fn validate(&self) -> Result<(), ControlError> {
        keys::HISTORY_S
            .check(self.history_s)
            .map_err(|problem| ControlError::InvalidConfig(format!("spare.history_s {problem}")))
    }
}

/// The keys of the `[pipeline.spare]` table, one definition each: its type, default,
/// range and meaning. `SpareConfig::validate` checks against these ranges, the daemon reads the
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
        doc: "Keep warm spare capacity for bursts when it pays.",
    };

    /// `history_s`.
    pub const HISTORY_S: KeySpec = KeySpec {
        name: "history_s",
        kind: "number (s)",
        integer: false,
        default: KeyDefault::Number(3600.0),
        bounds: Some(Bounds::closed(60.0, 86400.0)),
        doc: "Seconds of arrivals the burst history keeps.",
    };

    /// Every key of the table, in the reference's order.
    pub const ALL: &[KeySpec] = &[ENABLED, HISTORY_S];
}

/// Least history before the statistics are used, seconds.
pub const MIN_SPARE_HISTORY_S: usize = 600;

/// Least number of separate bursts above the forecast's capacity in the history before a
/// spare is kept: one level shift is not a pattern of bursts, and a share estimated from a
/// single event says little about the next hour.
pub const MIN_BURSTS: usize = 3;

/// The last hour (or `history_s`) of per-second arrivals, each with the peak of the period
/// that ended one lead before it.
#[derive(Debug, Clone, PartialEq)]
pub struct BurstHistory {
    /// Seconds between a burst and the capacity started for it being ready.
    lead_s: usize,
    /// Length of the period whose peak sizes the capacity, seconds.
    period_s: usize,
    capacity: usize,
    /// The last `lead_s + period_s − 1` arrivals (to find each second's peak).
    recent: VecDeque<f64>,
    /// `(ā_s, p_s)` for the seconds of the history (`ā_s`: the mean of `s − 1` and `s`).
    seconds: VecDeque<(f64, f64)>,
    total_arrivals: f64,
}

/// What the spare rule chose at one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct SpareChoice {
    /// The load to plan for, requests/s.
    pub load_rps: f64,
    /// Share of requests above the capacity of the forecast's plan over the history.
    pub share_without: f64,
    /// The same above the capacity of the chosen load.
    pub share_with: f64,
    /// α · accuracy · (share saved), the planner's units.
    pub worth: f64,
    /// β · extra cores.
    pub cost: f64,
}

impl BurstHistory {
    /// An empty history of `history_s` seconds for a lead of `lead_s` and a period of
    /// `period_s` seconds (each at least one).
    pub fn new(history_s: f64, lead_s: f64, period_s: f64) -> BurstHistory {
        let whole = |s: f64| {
            if s.is_finite() && s >= 1.0 {
                s.round() as usize
            } else {
                1
            }
        };
        BurstHistory {
            lead_s: whole(lead_s),
            period_s: whole(period_s),
            capacity: whole(history_s),
            recent: VecDeque::new(),
            seconds: VecDeque::new(),
            total_arrivals: 0.0,
        }
    }

    /// Seconds held.
    pub fn len(&self) -> usize {
        self.seconds.len()
    }

    /// Whether no second is held.
    pub fn is_empty(&self) -> bool {
        self.seconds.is_empty()
    }

    /// Adds one second's arrivals (non-finite or negative values are skipped).
    pub fn push(&mut self, arrivals: f64) {
        if !(arrivals.is_finite() && arrivals >= 0.0) {
            return;
        }
        // `recent` holds the seconds before this one back to the start of the period that
        // ends `lead_s` seconds before it (that second included).
        if self.recent.len() == self.lead_s + self.period_s - 1 {
            let peak = self
                .recent
                .iter()
                .take(self.period_s)
                .copied()
                .fold(0.0, f64::max);
            if self.seconds.len() == self.capacity
                && let Some((old, _)) = self.seconds.pop_front()
            {
                self.total_arrivals -= old;
            }
            let previous = self.recent.back().copied().unwrap_or(arrivals);
            let smoothed = (previous + arrivals) / 2.0;
            self.seconds.push_back((smoothed, peak));
            self.total_arrivals += smoothed;
            self.recent.pop_front();
        }
        self.recent.push_back(arrivals);
    }

    /// Peak per-second arrivals of the last period.
    pub fn current_peak(&self) -> f64 {
        self.recent
            .iter()
            .rev()
            .take(self.period_s)
            .copied()
            .fold(0.0, f64::max)
    }

    /// Separate bursts above capacity `m · p_s / cap` (beyond noise, see the module docs):
    /// runs of seconds above it, apart by more than a period.
    pub fn bursts_above(&self, multiple: f64, utilisation_cap: f64) -> usize {
        if utilisation_cap.is_nan() || utilisation_cap <= 0.0 {
            return 0;
        }
        let factor = multiple / utilisation_cap;
        let mut bursts = 0;
        let mut quiet = usize::MAX;
        for &(a, p) in &self.seconds {
            if excess(a, factor * p) > 0.0 {
                if quiet > self.period_s {
                    bursts += 1;
                }
                quiet = 0;
            } else {
                quiet = quiet.saturating_add(1);
            }
        }
        bursts
    }

    /// `f(m)` of the module docs: the share of arrivals above `m · p_s / cap`.
    pub fn share_above(&self, multiple: f64, utilisation_cap: f64) -> f64 {
        if self.total_arrivals <= 0.0 || utilisation_cap.is_nan() || utilisation_cap <= 0.0 {
            return 0.0;
        }
        let factor = multiple / utilisation_cap;
        let above: f64 = self
            .seconds
            .iter()
            .map(|&(a, p)| excess(a, factor * p))
            .sum();
        (above / self.total_arrivals).clamp(0.0, 1.0)
    }

    /// The spare rule: given the load the forecast asks for, the value of a request
    /// served (`α · accuracy`), the price of carrying one more request/s (`β` × cores per
    /// carried request/s) and the cap, the load to plan for when keeping spare capacity
    /// pays; `None` when it does not (or too little history).
    pub fn choose(
        &self,
        load_rps: f64,
        request_value: f64,
        price_per_rps: f64,
        utilisation_cap: f64,
    ) -> Option<SpareChoice> {
        let peak = self.current_peak();
        let finite = [
            load_rps,
            request_value,
            price_per_rps,
            utilisation_cap,
            peak,
        ]
        .iter()
        .all(|v| v.is_finite());
        if !finite
            || self.seconds.len() < MIN_SPARE_HISTORY_S
            || peak <= 0.0
            || load_rps <= 0.0
            || request_value <= 0.0
            || price_per_rps <= 0.0
        {
            return None;
        }
        let base = load_rps / peak;
        let share_without = self.share_above(base, utilisation_cap);
        // Even saving every request would not pay for 5 % more capacity: keep none.
        if request_value * share_without <= price_per_rps * 0.05 * load_rps
            || self.bursts_above(base, utilisation_cap) < MIN_BURSTS
        {
            return None;
        }
        let value = |m: f64| {
            -request_value * self.share_above(m, utilisation_cap) - price_per_rps * m * peak
        };
        let mut best = (base, value(base));
        // Candidates up to the largest jump of the history, 5 % apart.
        let largest = self
            .seconds
            .iter()
            .filter(|(_, p)| *p > 0.0)
            .map(|&(a, p)| a * utilisation_cap / p)
            .fold(base, f64::max);
        let mut m = base * 1.05;
        while m <= largest * 1.05 {
            let v = value(m);
            if v > best.1 {
                best = (m, v);
            }
            m *= 1.05;
        }
        if best.0 <= base {
            return None;
        }
        let share_with = self.share_above(best.0, utilisation_cap);
        Some(SpareChoice {
            load_rps: best.0 * peak,
            share_without,
            share_with,
            worth: request_value * (share_without - share_with),
            cost: price_per_rps * (best.0 - base) * peak,
        })
    }
}

/// Arrivals (a 2-s mean) beyond `capacity` and three Poisson standard deviations of it.
fn excess(arrivals: f64, capacity: f64) -> f64 {
    (arrivals - capacity - 3.0 * (capacity.max(0.0) / 2.0).sqrt()).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_a_short_history_is_refused() {
        let defaults = SpareConfig::default();
        assert_eq!(defaults.validate(), Ok(()));
        let bad = SpareConfig {
            history_s: 5.0,
            ..SpareConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    /// `seconds` of a steady `rate` with a burst of `factor × rate` for `burst_s` seconds
    /// in the middle of every `every_s` seconds.
    fn bursty(seconds: usize, rate: f64, factor: f64, every_s: usize, burst_s: usize) -> Vec<f64> {
        (0..seconds)
            .map(|s| {
                if every_s > 0 && (every_s / 2..every_s / 2 + burst_s).contains(&(s % every_s)) {
                    rate * factor
                } else {
                    rate
                }
            })
            .collect()
    }

    fn history(rates: &[f64]) -> BurstHistory {
        let mut h = BurstHistory::new(3600.0, 10.0, 10.0);
        for &r in rates {
            h.push(r);
        }
        h
    }

    #[test]
    fn the_share_above_counts_what_exceeds_the_lagged_capacity() {
        // 100 rps with a 3× burst of 30 s every 600 s: the burst's first lead (10 s) of
        // 300 rps is above a capacity sized for 100 / 0.8 = 125 rps.
        // Its first second is a 2-s mean of 200; the noise margin is 3·√62.5.
        let h = history(&bursty(3600, 100.0, 3.0, 600, 30));
        let share = h.share_above(1.0, 0.8);
        let bursts = 3600.0 / 600.0;
        let total = 100.0 * 3600.0 + 200.0 * 30.0 * bursts;
        let margin = 125.0 + 3.0 * 62.5f64.sqrt();
        let per_burst = (200.0 - margin) + 9.0 * (300.0 - margin);
        let expected = bursts * per_burst / total;
        assert!((share - expected).abs() < 0.002, "{share} vs {expected}");
        // Capacity for the whole burst leaves nothing above it.
        assert_eq!(h.share_above(3.0 * 0.8, 0.8), 0.0);
    }

    #[test]
    fn a_steady_load_or_a_single_step_keeps_no_spare() {
        let h = history(&vec![100.0; 3600]);
        assert_eq!(h.choose(110.0, 1.0, 0.0025 / 5.0, 0.8), None);
        let mut step = vec![30.0; 1800];
        step.extend(vec![90.0; 1800]);
        let h = history(&step);
        assert_eq!(h.bursts_above(1.0, 0.8), 1);
        assert_eq!(h.choose(99.0, 1.0, 0.0001, 0.8), None);
        assert_eq!(
            history(&bursty(3600, 100.0, 3.0, 600, 30)).bursts_above(1.1, 0.8),
            6
        );
    }

    #[test]
    fn bursts_worth_more_than_their_cores_keep_a_spare_and_cheap_ones_do_not() {
        let h = history(&bursty(3600, 100.0, 3.0, 600, 30));
        // Requests worth a lot against cheap cores: keep capacity for the burst.
        let choice = h.choose(110.0, 1.0, 0.0001, 0.8).expect("a spare pays");
        assert!(choice.load_rps >= 2.0 * 100.0, "{choice:?}");
        assert!(choice.worth > choice.cost, "{choice:?}");
        assert!(choice.share_with < choice.share_without, "{choice:?}");
        // Cores priced far above what the bursts lose: none.
        assert_eq!(h.choose(110.0, 1.0, 0.1, 0.8), None);
    }

    #[test]
    fn too_little_history_or_garbage_keeps_none() {
        let h = history(&bursty(300, 100.0, 3.0, 100, 30));
        assert_eq!(h.choose(110.0, 1.0, 0.0001, 0.8), None);
        let full = history(&bursty(3600, 100.0, 3.0, 600, 30));
        assert_eq!(full.choose(f64::NAN, 1.0, 0.0001, 0.8), None);
        assert_eq!(full.choose(110.0, 1.0, 0.0, 0.8), None);
        let mut garbage = BurstHistory::new(3600.0, 10.0, 10.0);
        for _ in 0..1000 {
            garbage.push(f64::NAN);
            garbage.push(-1.0);
        }
        assert!(garbage.is_empty());
    }

    #[test]
    fn the_history_keeps_its_length() {
        let mut h = BurstHistory::new(100.0, 5.0, 10.0);
        for s in 0..1000 {
            h.push(s as f64);
        }
        assert_eq!(h.len(), 100);
        // The last 100 seconds pushed, each the mean of itself and the one before.
        let expected: f64 = (900..1000).map(|s| s as f64 - 0.5).sum();
        assert!((h.total_arrivals - expected).abs() < 1e-6);
    }
}
