//! Feedback correction of the provisioning headroom: a PI controller with anti-windup on
//! the observed SLO-miss rate and queue growth.
//!
//! Why it is stable: the output is bounded to `[1, max_headroom]`; the integrator is
//! clamped to `[0, max_integral]` and does not integrate while the output is saturated in
//! the direction of the error; windows while capacity is still starting (dead time) or
//! while demand exceeded the deployed capacity (a forecast miss) are ignored; the error
//! is clamped, so one
//! tick moves the integrator by at most `ki·Δt·max_error` (0.08 at the defaults), several
//! ticks are needed to cross its range, and the plant (capacity sized from the corrected
//! load) answers within one cold start. A slow, bounded integrator on a monotone plant
//! (more headroom never adds misses) converges without sustained oscillation.

use serde::Serialize;

use crate::{DampingError, HeadroomConfig};

/// What the controller observes at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct HeadroomSignal {
    /// Time of the observation, seconds.
    pub now_s: f64,
    /// Requests that finished in the window (completed + dropped).
    pub finished: u64,
    /// Requests that missed the SLO in the window (late or dropped).
    pub misses: u64,
    /// Arrivals in the window.
    pub arrivals: f64,
    /// Requests queued over all stages now.
    pub queued: f64,
    /// Whether some replicas are still starting.
    pub capacity_starting: bool,
    /// Whether the observed demand exceeded what the deployed plan carries within the
    /// utilisation cap (a forecast miss the planner already answers, not a headroom error).
    pub demand_above_capacity: bool,
}

/// The PI controller's state and last output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadroomController {
    config: HeadroomConfig,
    integral: f64,
    headroom: f64,
    last_time_s: Option<f64>,
    last_queued: Option<f64>,
    last_error: f64,
}

impl HeadroomController {
    /// A controller at headroom 1.
    ///
    /// # Errors
    ///
    /// [`DampingError::InvalidConfig`] when a gain or bound is out of range.
    pub fn new(config: HeadroomConfig) -> Result<Self, DampingError> {
        config.validate()?;
        Ok(HeadroomController {
            config,
            integral: 0.0,
            headroom: 1.0,
            last_time_s: None,
            last_queued: None,
            last_error: 0.0,
        })
    }

    /// The multiplicative headroom to apply to the forecast (≥ 1).
    pub fn headroom(&self) -> f64 {
        self.headroom
    }

    /// The integrator's value.
    pub fn integral(&self) -> f64 {
        self.integral
    }

    /// The normalised error of the last update.
    pub fn last_error(&self) -> f64 {
        self.last_error
    }

    /// Normalised error of one observation: relative excess of the miss rate over the
    /// target, plus queue growth in units of `queue_growth_unit` of the arrivals, clamped
    /// to `[-1, max_error]`. No finished request and no queue growth reads as on target.
    fn error(&self, signal: &HeadroomSignal, queue_growth: f64) -> f64 {
        let c = &self.config;
        let miss_term = if signal.finished > 0 {
            let rate = (signal.misses.min(signal.finished)) as f64 / signal.finished as f64;
            (rate - c.target_miss_rate) / c.target_miss_rate
        } else {
            0.0
        };
        let queue_term = if signal.arrivals.is_finite() && signal.arrivals > 0.0 {
            (queue_growth.max(0.0) / signal.arrivals) / c.queue_growth_unit
        } else {
            0.0
        };
        let error = miss_term + queue_term;
        if error.is_finite() {
            error.clamp(-1.0, c.max_error)
        } else {
            c.max_error
        }
    }

    /// Updates the controller with one tick's observation and returns the new headroom.
    pub fn update(&mut self, signal: &HeadroomSignal) -> f64 {
        if !self.config.enabled {
            self.headroom = 1.0;
            return self.headroom;
        }
        let queued = if signal.queued.is_finite() {
            signal.queued.max(0.0)
        } else {
            0.0
        };
        let queue_growth = self.last_queued.map_or(0.0, |last| queued - last);
        self.last_queued = Some(queued);
        let dt = match self.last_time_s {
            Some(last) if signal.now_s.is_finite() && signal.now_s > last => signal.now_s - last,
            _ => 0.0,
        };
        if signal.now_s.is_finite() {
            self.last_time_s = Some(signal.now_s);
        }
        // A window whose misses come from capacity still starting (dead time) or from demand
        // above the deployed capacity (the forecast, not the headroom, was wrong) says
        // nothing about the headroom: neither term reacts to it, the integrator holds.
        let informative = !(signal.capacity_starting || signal.demand_above_capacity);
        let error = if informative {
            self.error(signal, queue_growth)
        } else {
            0.0
        };
        self.last_error = error;
        let c = &self.config;
        let unclamped = 1.0 + c.kp * error + self.integral;
        let saturated_high = unclamped >= c.max_headroom;
        // Conditional integration: an error that would push further into saturation is
        // not integrated; a negative error always unwinds (the clamp stops it at 0).
        let integrate = error < 0.0 || !saturated_high;
        if integrate {
            self.integral = (self.integral + c.ki * error * dt).clamp(0.0, c.max_integral);
        }
        let output = 1.0 + c.kp * error + self.integral;
        self.headroom = if output.is_finite() {
            output.clamp(1.0, c.max_headroom)
        } else {
            1.0
        };
        self.headroom
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(now_s: f64, misses: u64, queued: f64) -> HeadroomSignal {
        HeadroomSignal {
            now_s,
            finished: 1000,
            misses,
            arrivals: 1000.0,
            queued,
            capacity_starting: false,
            demand_above_capacity: false,
        }
    }

    #[test]
    fn stays_at_one_without_misses() {
        let mut c = HeadroomController::new(HeadroomConfig::default()).unwrap();
        for tick in 0..100 {
            assert_eq!(c.update(&signal(f64::from(tick) * 10.0, 0, 0.0)), 1.0);
        }
        assert_eq!(c.integral(), 0.0);
    }

    #[test]
    fn rises_bounded_under_persistent_misses_and_unwinds() {
        let config = HeadroomConfig::default();
        let mut c = HeadroomController::new(config.clone()).unwrap();
        let mut last = 1.0;
        for tick in 0..200 {
            let h = c.update(&signal(f64::from(tick) * 10.0, 500, 0.0));
            assert!(h >= last - 1e-12 && h <= config.max_headroom);
            last = h;
        }
        assert!(c.integral() <= config.max_integral);
        assert!(last > 1.2, "headroom {last}");
        // Anti-windup: the integrator is bounded, so recovery takes a bounded time.
        let mut ticks_to_unwind = 0;
        for tick in 200..400 {
            if c.update(&signal(f64::from(tick) * 10.0, 0, 0.0)) <= 1.0 {
                break;
            }
            ticks_to_unwind += 1;
        }
        let bound = (config.max_integral / (config.ki * 10.0)).ceil() as u32 + 1;
        assert!(ticks_to_unwind <= bound, "{ticks_to_unwind} > {bound}");
    }

    #[test]
    fn holds_integrator_while_capacity_starts() {
        let mut c = HeadroomController::new(HeadroomConfig::default()).unwrap();
        c.update(&signal(0.0, 0, 0.0));
        let mut s = signal(10.0, 900, 0.0);
        s.capacity_starting = true;
        c.update(&s);
        assert_eq!((c.integral(), c.headroom()), (0.0, 1.0));
        let mut s = signal(20.0, 900, 0.0);
        s.demand_above_capacity = true;
        c.update(&s);
        assert_eq!((c.integral(), c.headroom()), (0.0, 1.0));
        c.update(&signal(30.0, 900, 0.0));
        assert!(c.headroom() > 1.0, "an informative window reacts");
    }

    #[test]
    fn queue_growth_raises_headroom() {
        let mut c = HeadroomController::new(HeadroomConfig::default()).unwrap();
        c.update(&signal(0.0, 0, 0.0));
        let h = c.update(&signal(10.0, 0, 100.0));
        assert!(h > 1.0);
    }

    #[test]
    fn disabled_and_garbage_inputs_give_one() {
        let mut c = HeadroomController::new(HeadroomConfig::disabled()).unwrap();
        assert_eq!(c.update(&signal(0.0, 1000, 1e9)), 1.0);
        let mut c = HeadroomController::new(HeadroomConfig::default()).unwrap();
        let h = c.update(&HeadroomSignal {
            now_s: f64::NAN,
            finished: 0,
            misses: 5,
            arrivals: f64::INFINITY,
            queued: f64::NAN,
            capacity_starting: false,
            demand_above_capacity: false,
        });
        assert!(h.is_finite() && h >= 1.0);
    }
}
