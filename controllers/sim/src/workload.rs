//! Workloads: request-rate traces (one rate per second) and a generated diurnal workload.

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use crate::SimError;

/// Parses a rate trace: one requests-per-second value per line, or `timestamp,value` lines
/// (the value is the last comma-separated field). Blank lines and lines starting with `#` are
/// skipped, as is a header on the first data line when it is not a number.
///
/// # Errors
///
/// [`SimError::Parse`] naming the (1-based) line of the first value that is not a finite
/// number ≥ 0.
pub fn parse_rps_lines(text: &str) -> Result<Vec<f64>, SimError> {
    let mut rates = Vec::with_capacity(text.len() / 4);
    let mut first = true;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let field = line.rsplit_once(',').map_or(line, |(_, v)| v.trim());
        let is_first = std::mem::replace(&mut first, false);
        match field.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => rates.push(v),
            Ok(v) => {
                return Err(SimError::Parse {
                    line: index + 1,
                    problem: format!("rate must be finite and ≥ 0, got {v}"),
                });
            }
            Err(_) if is_first && field.chars().any(char::is_alphabetic) => {}
            Err(_) => {
                return Err(SimError::Parse {
                    line: index + 1,
                    problem: format!("`{field}` is not a number"),
                });
            }
        }
    }
    Ok(rates)
}

/// Rates `start..end` (line indices, 0-based, end exclusive) multiplied by `scale`.
///
/// # Errors
///
/// [`SimError::Workload`] when the range is empty-or-reversed beyond the trace, or the scale
/// is not a finite number ≥ 0.
pub fn slice(rates: &[f64], start: usize, end: usize, scale: f64) -> Result<Vec<f64>, SimError> {
    if start > end || end > rates.len() {
        return Err(SimError::Workload(format!(
            "slice {start}..{end} does not fit a trace of {} seconds",
            rates.len()
        )));
    }
    if !(scale.is_finite() && scale >= 0.0) {
        return Err(SimError::Workload(format!(
            "scale must be a finite number ≥ 0, got {scale}"
        )));
    }
    Ok(rates[start..end].iter().map(|r| r * scale).collect())
}

/// Shape of the synthetic diurnal workload.
///
/// The rate at second `t` is `day(t) · wobble(t) · noise(t) · burst(t)`:
/// - `day(t)` is a sinusoid from `trough_rps` to `peak_rps` whose period is `day_s` (by
///   default the whole run, so a short run still shows a day's shape), peaking at the
///   fraction `peak_at` of the day;
/// - `wobble` is a slow multiplicative AR(1) drift (correlation 0.995 per second) with
///   stationary relative deviation `wobble`;
/// - `noise` is independent per-second relative noise with deviation `noise`;
/// - bursts start as a Poisson process of `bursts_per_hour` (per hour of run time), each
///   multiplying the rate by a factor uniform in `burst_factor` for a duration uniform in
///   `burst_duration_s`, with 5-second linear ramps at both ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiurnalParams {
    pub trough_rps: f64,
    pub peak_rps: f64,
    /// Length of one simulated day in seconds; `None` is the run length.
    pub day_s: Option<f64>,
    /// Where in the day the peak falls, a fraction in [0, 1].
    pub peak_at: f64,
    pub wobble: f64,
    pub noise: f64,
    pub bursts_per_hour: f64,
    pub burst_factor: (f64, f64),
    pub burst_duration_s: (f64, f64),
}

impl Default for DiurnalParams {
    fn default() -> DiurnalParams {
        DiurnalParams {
            trough_rps: 20.0,
            peak_rps: 120.0,
            day_s: None,
            peak_at: 0.6,
            wobble: 0.08,
            noise: 0.05,
            bursts_per_hour: 4.0,
            burst_factor: (2.0, 4.0),
            burst_duration_s: (20.0, 120.0),
        }
    }
}

impl DiurnalParams {
    fn validate(&self) -> Result<(), SimError> {
        let bad = |problem: String| Err(SimError::Workload(problem));
        let finite_non_negative = |v: f64| v.is_finite() && v >= 0.0;
        for (name, v) in [
            ("trough_rps", self.trough_rps),
            ("peak_rps", self.peak_rps),
            ("wobble", self.wobble),
            ("noise", self.noise),
            ("bursts_per_hour", self.bursts_per_hour),
        ] {
            if !finite_non_negative(v) {
                return bad(format!("{name} must be a finite number ≥ 0, got {v}"));
            }
        }
        if let Some(day) = self.day_s
            && !(day.is_finite() && day > 0.0)
        {
            return bad(format!("day_s must be positive, got {day}"));
        }
        if !(0.0..=1.0).contains(&self.peak_at) {
            return bad(format!("peak_at must be in [0, 1], got {}", self.peak_at));
        }
        for (name, (lo, hi)) in [
            ("burst_factor", self.burst_factor),
            ("burst_duration_s", self.burst_duration_s),
        ] {
            if !(finite_non_negative(lo) && finite_non_negative(hi) && lo <= hi) {
                return bad(format!(
                    "{name} must be a range lo ≤ hi of finite numbers ≥ 0, got ({lo}, {hi})"
                ));
            }
        }
        Ok(())
    }
}

/// Ramp length at both ends of a burst, seconds.
const BURST_RAMP_S: f64 = 5.0;

/// A generated diurnal workload of `seconds` rates with bursts, deterministic per `seed`.
///
/// # Errors
///
/// [`SimError::Workload`] when a parameter is out of range.
pub fn synthetic_diurnal(
    seconds: usize,
    seed: u64,
    params: &DiurnalParams,
) -> Result<Vec<f64>, SimError> {
    params.validate()?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let day_s = params.day_s.unwrap_or(seconds.max(1) as f64);
    let mut burst = vec![1.0f64; seconds];
    if params.bursts_per_hour > 0.0 && seconds > 0 {
        let gaps = Exp::new(params.bursts_per_hour / 3600.0)
            .map_err(|e| SimError::Workload(e.to_string()))?;
        let mut start: f64 = gaps.sample(&mut rng);
        while start < seconds as f64 {
            let (f_lo, f_hi) = params.burst_factor;
            let (d_lo, d_hi) = params.burst_duration_s;
            let factor = f_lo + (f_hi - f_lo) * rng.random::<f64>();
            let duration = d_lo + (d_hi - d_lo) * rng.random::<f64>();
            let first = start.floor() as usize;
            let last = ((start + duration).ceil() as usize).min(seconds);
            for (t, slot) in burst.iter_mut().enumerate().take(last).skip(first) {
                let into = t as f64 - start;
                let ramp = (into / BURST_RAMP_S)
                    .min((duration - into) / BURST_RAMP_S)
                    .clamp(0.0, 1.0);
                *slot = slot.max(1.0 + (factor - 1.0) * ramp);
            }
            start += gaps.sample(&mut rng).max(1.0);
        }
    }
    let rho: f64 = 0.995;
    let innovation = params.wobble * (1.0 - rho * rho).sqrt();
    let mut drift = 0.0f64;
    let mut rates = Vec::with_capacity(seconds);
    for (t, burst_factor) in burst.into_iter().enumerate() {
        let phase = t as f64 / day_s - params.peak_at + 0.5;
        let day = params.trough_rps
            + (params.peak_rps - params.trough_rps) * (1.0 - (std::f64::consts::TAU * phase).cos())
                / 2.0;
        let z: f64 = rng.sample(StandardNormal);
        drift = rho * drift + innovation * z;
        let e: f64 = rng.sample(StandardNormal);
        let rate = day * (1.0 + drift).max(0.0) * (1.0 + params.noise * e).max(0.0) * burst_factor;
        rates.push(if rate.is_finite() { rate.max(0.0) } else { 0.0 });
    }
    Ok(rates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_csv_lines() {
        assert_eq!(
            parse_rps_lines("52\n55\n\n# note\n48.5\n").expect("plain"),
            vec![52.0, 55.0, 48.5]
        );
        assert_eq!(
            parse_rps_lines("timestamp,rps\n1000,3\n1001, 4.5\n").expect("csv"),
            vec![3.0, 4.5]
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        for (text, line, needle) in [
            ("1\n2\nx\n", 3, "not a number"),
            ("1\n-2\n", 2, "≥ 0"),
            ("5\nNaN\n", 2, "finite"),
        ] {
            match parse_rps_lines(text) {
                Err(SimError::Parse { line: got, problem }) => {
                    assert_eq!(got, line, "{text:?}");
                    assert!(problem.contains(needle), "{problem}");
                }
                other => panic!("{text:?}: expected a parse error, got {other:?}"),
            }
        }
    }

    #[test]
    fn slice_checks_range_and_scale() {
        let rates = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(slice(&rates, 1, 3, 2.0).expect("ok"), vec![4.0, 6.0]);
        assert_eq!(slice(&rates, 4, 4, 1.0).expect("empty"), Vec::<f64>::new());
        assert!(slice(&rates, 3, 2, 1.0).is_err());
        assert!(slice(&rates, 0, 5, 1.0).is_err());
        assert!(slice(&rates, 0, 1, f64::NAN).is_err());
    }

    #[test]
    fn diurnal_is_deterministic_and_shaped() {
        let params = DiurnalParams {
            bursts_per_hour: 0.0,
            noise: 0.0,
            wobble: 0.0,
            ..DiurnalParams::default()
        };
        let rates = synthetic_diurnal(7200, 3, &params).expect("generate");
        assert_eq!(rates.len(), 7200);
        let peak = (0.6 * 7200.0) as usize;
        assert!((rates[peak] - 120.0).abs() < 0.1, "peak {}", rates[peak]);
        assert!((rates[(0.1 * 7200.0) as usize] - 20.0).abs() < 0.1);
        let noisy = DiurnalParams::default();
        assert_eq!(
            synthetic_diurnal(3600, 9, &noisy).expect("a"),
            synthetic_diurnal(3600, 9, &noisy).expect("b")
        );
        assert_ne!(
            synthetic_diurnal(3600, 9, &noisy).expect("a"),
            synthetic_diurnal(3600, 10, &noisy).expect("b")
        );
    }

    #[test]
    fn bursts_multiply_the_rate() {
        let flat = DiurnalParams {
            trough_rps: 50.0,
            peak_rps: 50.0,
            noise: 0.0,
            wobble: 0.0,
            bursts_per_hour: 30.0,
            ..DiurnalParams::default()
        };
        let rates = synthetic_diurnal(7200, 5, &flat).expect("generate");
        let max = rates.iter().cloned().fold(0.0, f64::max);
        assert!((100.0..=200.0 + 1e-9).contains(&max), "max {max}");
        assert!(rates.iter().all(|&r| r >= 50.0 - 1e-9));
        let bursting = rates.iter().filter(|&&r| r > 75.0).count();
        assert!(
            bursting > 300 && bursting < 5000,
            "{bursting} seconds in bursts"
        );
    }

    #[test]
    fn rejects_bad_params() {
        let bad = DiurnalParams {
            burst_factor: (4.0, 2.0),
            ..DiurnalParams::default()
        };
        assert!(synthetic_diurnal(10, 1, &bad).is_err());
        let bad = DiurnalParams {
            peak_rps: f64::INFINITY,
            ..DiurnalParams::default()
        };
        assert!(synthetic_diurnal(10, 1, &bad).is_err());
        assert_eq!(
            synthetic_diurnal(0, 1, &DiurnalParams::default()).expect("empty"),
            Vec::<f64>::new()
        );
    }
}
