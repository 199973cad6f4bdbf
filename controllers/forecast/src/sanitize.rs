//! Input hygiene: turns raw (time, rate) observations into clean samples and counts
//! everything it had to drop or repair.

use serde::{Deserialize, Serialize};

/// Counters of what the sanitizer saw; nothing it drops reaches a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HygieneReport {
    /// Observations offered.
    pub seen: u64,
    /// Observations passed on to the models.
    pub accepted: u64,
    /// Jumps in time longer than the expected step (missing samples).
    pub gaps: u64,
    /// Seconds of time covered by those gaps.
    pub gap_seconds: u64,
    /// Zero rates treated as collection gaps.
    pub zeros_as_gaps: u64,
    /// NaN or infinite rates or timestamps.
    pub non_finite: u64,
    /// Negative rates.
    pub negative: u64,
    /// Samples whose timestamp is not after the previous accepted one.
    pub out_of_order: u64,
    /// Cumulative counters that went backwards (a restarted exporter).
    pub counter_resets: u64,
}

/// Options for [`Sanitizer`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SanitizerConfig {
    /// Treat a rate of exactly zero as a missing sample (collection gap).
    pub zero_is_gap: bool,
    /// Expected spacing of samples in seconds; longer jumps count as gaps.
    pub step_s: f64,
}

impl Default for SanitizerConfig {
    fn default() -> Self {
        Self {
            zero_is_gap: true,
            step_s: 1.0,
        }
    }
}

/// Filters observations; reusable by every forecaster and by the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sanitizer {
    config: SanitizerConfig,
    report: HygieneReport,
    last_time_s: Option<f64>,
    last_counter: Option<(f64, f64)>,
}

impl Default for Sanitizer {
    fn default() -> Self {
        Self::new(SanitizerConfig::default())
    }
}

impl Sanitizer {
    /// A sanitizer with the given options.
    pub fn new(config: SanitizerConfig) -> Self {
        Self {
            config,
            report: HygieneReport::default(),
            last_time_s: None,
            last_counter: None,
        }
    }

    /// Checks one rate sample; returns it when a model may use it.
    pub fn accept(&mut self, t_s: f64, rps: f64) -> Option<(f64, f64)> {
        self.report.seen += 1;
        if !t_s.is_finite() || !rps.is_finite() {
            self.report.non_finite += 1;
            return None;
        }
        if rps < 0.0 {
            self.report.negative += 1;
            return None;
        }
        if self.last_time_s.is_some_and(|last| t_s <= last) {
            self.report.out_of_order += 1;
            return None;
        }
        if rps == 0.0 && self.config.zero_is_gap {
            self.report.zeros_as_gaps += 1;
            return None;
        }
        if let Some(last) = self.last_time_s {
            let jump = t_s - last;
            if jump > 1.5 * self.config.step_s {
                self.report.gaps += 1;
                let missing = (jump - self.config.step_s).round().max(0.0) as u64;
                self.report.gap_seconds = self.report.gap_seconds.saturating_add(missing);
            }
        }
        self.last_time_s = Some(t_s);
        self.report.accepted += 1;
        Some((t_s, rps))
    }

    /// Converts a cumulative request counter into a rate sample; a counter that goes
    /// backwards is a reset and restarts from zero.
    pub fn accept_counter(&mut self, t_s: f64, total: f64) -> Option<(f64, f64)> {
        if !t_s.is_finite() || !total.is_finite() || total < 0.0 {
            self.report.seen += 1;
            if total < 0.0 {
                self.report.negative += 1;
            } else {
                self.report.non_finite += 1;
            }
            return None;
        }
        let Some((last_t, last_total)) = self.last_counter else {
            self.last_counter = Some((t_s, total));
            return None;
        };
        if t_s <= last_t {
            self.report.seen += 1;
            self.report.out_of_order += 1;
            return None;
        }
        self.last_counter = Some((t_s, total));
        let increase = if total < last_total {
            self.report.counter_resets += 1;
            total
        } else {
            total - last_total
        };
        self.accept(t_s, increase / (t_s - last_t))
    }

    /// What has been seen so far.
    pub fn hygiene(&self) -> HygieneReport {
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_and_counts_bad_samples() {
        let mut s = Sanitizer::default();
        assert_eq!(s.accept(0.0, 5.0), Some((0.0, 5.0)));
        assert_eq!(s.accept(1.0, f64::NAN), None);
        assert_eq!(s.accept(2.0, -3.0), None);
        assert_eq!(s.accept(3.0, 0.0), None);
        assert_eq!(s.accept(4.0, f64::INFINITY), None);
        assert_eq!(s.accept(f64::NAN, 1.0), None);
        assert_eq!(s.accept(10.0, 7.0), Some((10.0, 7.0)));
        assert_eq!(s.accept(9.0, 7.0), None);
        assert_eq!(s.accept(10.0, 7.0), None);
        let r = s.hygiene();
        assert_eq!(r.seen, 9);
        assert_eq!(r.accepted, 2);
        assert_eq!(r.non_finite, 3);
        assert_eq!(r.negative, 1);
        assert_eq!(r.zeros_as_gaps, 1);
        assert_eq!(r.out_of_order, 2);
        assert_eq!(r.gaps, 1);
        assert_eq!(r.gap_seconds, 9);
    }

    #[test]
    fn zero_is_kept_when_configured() {
        let mut s = Sanitizer::new(SanitizerConfig {
            zero_is_gap: false,
            step_s: 1.0,
        });
        assert_eq!(s.accept(0.0, 0.0), Some((0.0, 0.0)));
        assert_eq!(s.hygiene().zeros_as_gaps, 0);
    }

    #[test]
    fn counter_reset_is_counted_and_rate_stays_positive() {
        let mut s = Sanitizer::default();
        assert_eq!(s.accept_counter(0.0, 100.0), None);
        assert_eq!(s.accept_counter(1.0, 150.0), Some((1.0, 50.0)));
        assert_eq!(s.accept_counter(2.0, 20.0), Some((2.0, 20.0)));
        assert_eq!(s.accept_counter(3.0, 60.0), Some((3.0, 40.0)));
        assert_eq!(s.hygiene().counter_resets, 1);
    }
}
