//! Variant profiles: measured (batch, cores) points and the fitted latency model
//! `l(b, c) = γ·b/c + δ·b + ε/c + η` used for points that were not measured.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// One measured operating point of a variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilePoint {
    /// Batch size the server ran with.
    pub batch: u32,
    /// Cores given to one replica.
    pub cores: u32,
    /// 99th percentile latency of one batch, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// Mean latency of one batch, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_ms: Option<f64>,
    /// Sustained requests per second of one replica at this point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput_rps: Option<f64>,
}

/// Coefficients of `l(b, c) = γ·b/c + δ·b + ε/c + η` (milliseconds), all non-negative.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyFit {
    pub gamma: f64,
    pub delta: f64,
    pub epsilon: f64,
    pub eta: f64,
    /// Root-mean-square error of the fit on the measured points, in milliseconds.
    pub rmse_ms: f64,
}

impl LatencyFit {
    /// Latency predicted for batch `b` on `c` cores, in milliseconds.
    pub fn latency_ms(&self, batch: u32, cores: u32) -> f64 {
        let (b, c) = (f64::from(batch), f64::from(cores));
        self.gamma * b / c + self.delta * b + self.epsilon / c + self.eta
    }

    /// Non-negative least-squares fit on `(batch, cores, latency_ms)` samples.
    ///
    /// With four unknowns the exact non-negative solution is found by trying every support
    /// set of the four terms and keeping the best one whose coefficients are all `>= 0`.
    pub fn fit(samples: &[(u32, u32, f64)]) -> Option<LatencyFit> {
        if samples.is_empty() {
            return None;
        }
        let features = |b: u32, c: u32| {
            let (b, c) = (f64::from(b), f64::from(c));
            [b / c, b, 1.0 / c, 1.0]
        };
        let targets = DVector::from_iterator(samples.len(), samples.iter().map(|s| s.2));
        let mut best: Option<([f64; 4], f64)> = None;
        for support in 1u8..16 {
            let columns: Vec<usize> = (0..4).filter(|k| support & (1 << k) != 0).collect();
            let design = DMatrix::from_fn(samples.len(), columns.len(), |row, col| {
                let (b, c, _) = samples[row];
                features(b, c)[columns[col]]
            });
            let Ok(solution) = design.clone().svd(true, true).solve(&targets, 1e-12) else {
                continue;
            };
            if solution.iter().any(|v| !v.is_finite() || *v < -1e-12) {
                continue;
            }
            let residual = (&design * &solution - &targets).norm_squared();
            if best.as_ref().is_none_or(|(_, r)| residual < *r - 1e-12) {
                let mut coefficients = [0.0; 4];
                for (k, &column) in columns.iter().enumerate() {
                    coefficients[column] = solution[k].max(0.0);
                }
                best = Some((coefficients, residual));
            }
        }
        let (c, residual) = best?;
        Some(LatencyFit {
            gamma: c[0],
            delta: c[1],
            epsilon: c[2],
            eta: c[3],
            rmse_ms: (residual / samples.len() as f64).sqrt(),
        })
    }
}

/// Where an estimate comes from, so that a plan can say when it relies on a guess.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum EstimateSource {
    /// The point was measured.
    Measured,
    /// Fitted, inside the measured batch and core ranges.
    Interpolated,
    /// Fitted, outside the measured ranges; `factor` is how far (1.0 = at the edge, 2.0 =
    /// twice the largest measured value or half the smallest).
    Extrapolated { factor: f64 },
}

/// Latency and throughput of one replica at one (batch, cores) point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub throughput_rps: f64,
    pub source: EstimateSource,
}

/// Measured points of one variant plus the fits derived from them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    points: Vec<ProfilePoint>,
    p99_fit: Option<LatencyFit>,
    mean_fit: LatencyFit,
    /// Fit of the effective time per batch, `batch / throughput` (ms), on measured
    /// throughputs where given and mean latencies elsewhere: servers that overlap requests
    /// deliver more than latency alone implies, and capacity grows with cores on its own curve.
    batch_time_fit: LatencyFit,
    batch_range: (u32, u32),
    cores_range: (u32, u32),
}

impl Profile {
    /// Validates the points and fits the latency models.
    pub fn new(points: Vec<ProfilePoint>) -> Result<Profile, ModelError> {
        if points.is_empty() {
            return Err(ModelError::EmptyProfile);
        }
        for (index, p) in points.iter().enumerate() {
            let bad = |problem: &str| ModelError::BadPoint {
                index,
                problem: problem.to_owned(),
            };
            if p.batch == 0 {
                return Err(bad("batch must be at least 1"));
            }
            if p.cores == 0 {
                return Err(bad("cores must be at least 1"));
            }
            for (name, value) in [
                ("p99_ms", p.p99_ms),
                ("mean_ms", p.mean_ms),
                ("throughput_rps", p.throughput_rps),
            ] {
                if let Some(v) = value
                    && !(v.is_finite() && v > 0.0)
                {
                    return Err(bad(&format!(
                        "{name} must be a positive finite number, got {v}"
                    )));
                }
            }
            if p.p99_ms.is_none() && p.mean_ms.is_none() {
                return Err(bad("needs p99_ms or mean_ms"));
            }
            if points[..index]
                .iter()
                .any(|q| q.batch == p.batch && q.cores == p.cores)
            {
                return Err(bad(&format!(
                    "duplicate point batch={} cores={}",
                    p.batch, p.cores
                )));
            }
        }
        let p99_samples: Vec<_> = points
            .iter()
            .filter_map(|p| Some((p.batch, p.cores, p.p99_ms?)))
            .collect();
        let mean_samples: Vec<_> = points
            .iter()
            .map(|p| (p.batch, p.cores, p.mean_ms.or(p.p99_ms).unwrap_or(f64::NAN)))
            .collect();
        let p99_fit = LatencyFit::fit(&p99_samples);
        let mean_fit = LatencyFit::fit(&mean_samples).ok_or(ModelError::EmptyProfile)?;
        let batch_time_samples: Vec<_> = points
            .iter()
            .zip(&mean_samples)
            .map(|(p, &(b, c, mean))| match p.throughput_rps {
                Some(rps) => (b, c, f64::from(b) * 1000.0 / rps),
                None => (b, c, mean),
            })
            .collect();
        let batch_time_fit =
            LatencyFit::fit(&batch_time_samples).ok_or(ModelError::EmptyProfile)?;
        let range = |f: fn(&ProfilePoint) -> u32| {
            let lo = points.iter().map(f).min().unwrap_or(1);
            let hi = points.iter().map(f).max().unwrap_or(1);
            (lo, hi)
        };
        Ok(Profile {
            batch_range: range(|p| p.batch),
            cores_range: range(|p| p.cores),
            points,
            p99_fit,
            mean_fit,
            batch_time_fit,
        })
    }

    /// The measured points, in the order given.
    pub fn points(&self) -> &[ProfilePoint] {
        &self.points
    }

    /// The fit used for mean latency (and for p99 when no p99 was measured).
    pub fn mean_fit(&self) -> &LatencyFit {
        &self.mean_fit
    }

    /// The fit used for p99 latency, when p99 was measured somewhere.
    pub fn p99_fit(&self) -> Option<&LatencyFit> {
        self.p99_fit.as_ref()
    }

    /// Latency and throughput of one replica with batch `batch` on `cores` cores.
    pub fn estimate(&self, batch: u32, cores: u32) -> Estimate {
        if let Some(p) = self
            .points
            .iter()
            .find(|p| p.batch == batch && p.cores == cores)
        {
            let p99_ms = p.p99_ms.or(p.mean_ms).unwrap_or(f64::INFINITY);
            let mean_ms = p.mean_ms.or(p.p99_ms).unwrap_or(f64::INFINITY);
            let throughput_rps = p
                .throughput_rps
                .unwrap_or(f64::from(batch) * 1000.0 / mean_ms);
            return Estimate {
                p99_ms,
                mean_ms,
                throughput_rps,
                source: EstimateSource::Measured,
            };
        }
        let positive = |v: f64| {
            if v.is_finite() && v > 0.0 {
                v
            } else {
                f64::MIN_POSITIVE.max(1e-6)
            }
        };
        let mean_ms = positive(self.mean_fit.latency_ms(batch, cores));
        let p99_ms = match &self.p99_fit {
            Some(fit) => positive(fit.latency_ms(batch, cores)).max(mean_ms),
            None => mean_ms,
        };
        let throughput_rps =
            f64::from(batch) * 1000.0 / positive(self.batch_time_fit.latency_ms(batch, cores));
        Estimate {
            p99_ms,
            mean_ms,
            throughput_rps,
            source: self.source_for(batch, cores),
        }
    }

    fn source_for(&self, batch: u32, cores: u32) -> EstimateSource {
        let beyond = |value: u32, (lo, hi): (u32, u32)| {
            let v = f64::from(value);
            if value > hi {
                v / f64::from(hi)
            } else if value < lo {
                f64::from(lo) / v
            } else {
                1.0
            }
        };
        let factor = beyond(batch, self.batch_range).max(beyond(cores, self.cores_range));
        if factor > 1.0 {
            EstimateSource::Extrapolated { factor }
        } else {
            EstimateSource::Interpolated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(batch: u32, cores: u32, p99: f64) -> ProfilePoint {
        ProfilePoint {
            batch,
            cores,
            p99_ms: Some(p99),
            mean_ms: Some(p99 * 0.8),
            throughput_rps: None,
        }
    }

    #[test]
    fn fit_recovers_exact_model() {
        let truth = LatencyFit {
            gamma: 40.0,
            delta: 3.0,
            epsilon: 20.0,
            eta: 5.0,
            rmse_ms: 0.0,
        };
        let samples: Vec<_> = [(1, 1), (2, 1), (4, 2), (8, 4), (1, 4), (8, 1)]
            .iter()
            .map(|&(b, c)| (b, c, truth.latency_ms(b, c)))
            .collect();
        let fit = LatencyFit::fit(&samples).expect("fit");
        for (b, c) in [(3, 3), (16, 8), (1, 16)] {
            assert!((fit.latency_ms(b, c) - truth.latency_ms(b, c)).abs() < 1e-6);
        }
        assert!(fit.rmse_ms < 1e-6);
    }

    #[test]
    fn fit_never_goes_negative() {
        // Latency falling with batch would need a negative δ; the fit must clamp instead.
        let samples = vec![(1, 1, 100.0), (2, 1, 90.0), (4, 1, 80.0)];
        let fit = LatencyFit::fit(&samples).expect("fit");
        for c in [fit.gamma, fit.delta, fit.epsilon, fit.eta] {
            assert!(c >= 0.0);
        }
        assert!(fit.latency_ms(64, 1) > 0.0);
    }

    #[test]
    fn estimate_marks_measured_interpolated_extrapolated() {
        let profile = Profile::new(vec![
            point(1, 1, 50.0),
            point(4, 1, 120.0),
            point(1, 4, 20.0),
            point(4, 4, 45.0),
        ])
        .expect("profile");
        assert_eq!(profile.estimate(4, 1).source, EstimateSource::Measured);
        assert_eq!(profile.estimate(4, 1).p99_ms, 120.0);
        assert_eq!(profile.estimate(2, 2).source, EstimateSource::Interpolated);
        match profile.estimate(16, 4).source {
            EstimateSource::Extrapolated { factor } => assert_eq!(factor, 4.0),
            other => panic!("expected extrapolation, got {other:?}"),
        }
    }

    #[test]
    fn throughput_defaults_to_batch_over_mean_latency() {
        let profile = Profile::new(vec![ProfilePoint {
            batch: 4,
            cores: 1,
            p99_ms: Some(200.0),
            mean_ms: Some(100.0),
            throughput_rps: None,
        }])
        .expect("profile");
        assert!((profile.estimate(4, 1).throughput_rps - 40.0).abs() < 1e-9);
    }

    #[test]
    fn throughput_between_measured_points_follows_measured_capacity() {
        // Capacity linear in cores (as measured for CPU servers that overlap requests), with
        // a p99 that says nothing about it: the estimate must follow the capacities.
        let points = (1..=4)
            .map(|c| ProfilePoint {
                batch: 1,
                cores: c * 2,
                p99_ms: Some(400.0),
                mean_ms: None,
                throughput_rps: Some(10.0 * f64::from(c * 2)),
            })
            .collect();
        let profile = Profile::new(points).expect("profile");
        let at3 = profile.estimate(1, 3).throughput_rps;
        assert!((25.0..=35.0).contains(&at3), "3 cores: {at3} rps");
        let at1 = profile.estimate(1, 1).throughput_rps;
        assert!(
            at1 < 15.0,
            "1 core (extrapolated) must not exceed the trend: {at1} rps"
        );
    }

    #[test]
    fn rejects_bad_points() {
        let cases = [
            (
                ProfilePoint {
                    batch: 0,
                    cores: 1,
                    p99_ms: Some(1.0),
                    mean_ms: None,
                    throughput_rps: None,
                },
                "batch",
            ),
            (
                ProfilePoint {
                    batch: 1,
                    cores: 1,
                    p99_ms: Some(f64::NAN),
                    mean_ms: None,
                    throughput_rps: None,
                },
                "p99_ms",
            ),
            (
                ProfilePoint {
                    batch: 1,
                    cores: 1,
                    p99_ms: None,
                    mean_ms: None,
                    throughput_rps: Some(3.0),
                },
                "needs",
            ),
        ];
        for (p, needle) in cases {
            let err = Profile::new(vec![p]).expect_err("must reject").to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
        assert!(Profile::new(vec![]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn estimates_are_finite_and_positive(
            lats in proptest::collection::vec(1.0f64..5000.0, 1..8),
            b in 1u32..128, c in 1u32..64,
        ) {
            let points: Vec<_> = lats.iter().enumerate()
                .map(|(i, &l)| point(1 + (i as u32 % 3) * 2, 1 + i as u32 / 3, l))
                .collect();
            let profile = Profile::new(points).expect("valid");
            let e = profile.estimate(b, c);
            proptest::prop_assert!(e.p99_ms.is_finite() && e.p99_ms > 0.0);
            proptest::prop_assert!(e.mean_ms.is_finite() && e.mean_ms > 0.0);
            proptest::prop_assert!(e.throughput_rps.is_finite() && e.throughput_rps > 0.0);
            proptest::prop_assert!(e.p99_ms >= e.mean_ms || e.source == EstimateSource::Measured);
        }
    }
}
