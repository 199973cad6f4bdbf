//! Batch service-time model: a lognormal per batch size fitted to the profile's mean and p99,
//! and the replica occupancy that reproduces the profiled throughput.

use infadapt_model::Profile;
use rand::Rng;
use rand_distr::StandardNormal;

use crate::SimError;

/// The standard normal 99th percentile.
pub(crate) const Z99: f64 = 2.326_347_874_040_841;

/// Longest batch latency the simulator draws, in seconds (guards the lognormal tail).
const MAX_LATENCY_S: f64 = 3600.0;

/// σ of the lognormal whose mean is `mean` and whose 99th percentile is `p99`:
/// `p99 / mean = exp(z·σ − σ²/2)`, the smaller root; 0 when `p99 ≤ mean`, and the
/// maximum `z` when the ratio exceeds what any lognormal reaches.
pub(crate) fn lognormal_sigma(mean: f64, p99: f64) -> f64 {
    if !(mean > 0.0 && p99 > mean) {
        return 0.0;
    }
    let log_ratio = (p99 / mean).ln();
    let discriminant = Z99 * Z99 - 2.0 * log_ratio;
    if discriminant <= 0.0 {
        Z99
    } else {
        Z99 - discriminant.sqrt()
    }
}

/// How one replica serves a batch of a given size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BatchService {
    /// μ of ln(latency in seconds).
    log_mean: f64,
    sigma: f64,
    /// Mean latency in seconds (used directly when σ = 0).
    mean_s: f64,
    /// Replica occupancy per second of batch latency: `(k / throughput) / mean latency`.
    occupancy_ratio: f64,
}

impl BatchService {
    fn new(
        mean_ms: f64,
        p99_ms: f64,
        throughput_rps: f64,
        k: u32,
        noise_scale: f64,
        min_sigma: f64,
    ) -> BatchService {
        let mean_s = mean_ms / 1000.0;
        let sigma = lognormal_sigma(mean_ms, p99_ms).max(min_sigma) * noise_scale;
        let occupancy = f64::from(k) / throughput_rps;
        let occupancy_ratio = if occupancy.is_finite() && occupancy > 0.0 {
            occupancy / mean_s
        } else {
            1.0
        };
        BatchService {
            log_mean: mean_s.ln() - sigma * sigma / 2.0,
            sigma,
            mean_s,
            occupancy_ratio,
        }
    }

    /// Draws a batch latency; returns `(latency_s, occupancy_s)`.
    #[inline]
    pub fn draw<R: Rng>(&self, rng: &mut R) -> (f64, f64) {
        let latency = if self.sigma > 0.0 {
            let z: f64 = rng.sample(StandardNormal);
            (self.log_mean + self.sigma * z).exp().min(MAX_LATENCY_S)
        } else {
            self.mean_s
        };
        (latency, latency * self.occupancy_ratio)
    }
}

/// Service of batches of 1..=`batch` requests for one (variant, cores) replica, plus the
/// replica's profiled throughput at full batches.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceTable {
    by_size: Vec<BatchService>,
    pub full_batch_throughput_rps: f64,
}

impl ServiceTable {
    pub fn build(
        profile: &Profile,
        variant: &str,
        batch: u32,
        cores: u32,
        noise_scale: f64,
        min_sigma: f64,
    ) -> Result<ServiceTable, SimError> {
        let mut by_size = Vec::with_capacity(batch as usize);
        let mut full_batch_throughput_rps = 0.0;
        for k in 1..=batch {
            let e = profile.estimate(k, cores);
            if !(e.mean_ms.is_finite() && e.mean_ms > 0.0 && e.p99_ms.is_finite() && e.p99_ms > 0.0)
            {
                return Err(SimError::Plan(format!(
                    "variant `{variant}` has no finite latency for batch {k} on {cores} cores"
                )));
            }
            full_batch_throughput_rps = if e.throughput_rps.is_finite() && e.throughput_rps > 0.0 {
                e.throughput_rps
            } else {
                f64::from(k) * 1000.0 / e.mean_ms
            };
            by_size.push(BatchService::new(
                e.mean_ms,
                e.p99_ms,
                full_batch_throughput_rps,
                k,
                noise_scale,
                min_sigma,
            ));
        }
        Ok(ServiceTable {
            by_size,
            full_batch_throughput_rps,
        })
    }

    /// Service of a batch of `k` requests (`1 ≤ k ≤ batch`).
    #[inline]
    pub fn for_size(&self, k: usize) -> &BatchService {
        &self.by_size[k.clamp(1, self.by_size.len()) - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn sigma_reproduces_mean_and_p99() {
        for (mean, p99) in [(10.0, 12.0), (50.0, 120.0), (5.0, 40.0)] {
            let sigma = lognormal_sigma(mean, p99);
            let ratio = (Z99 * sigma - sigma * sigma / 2.0).exp();
            assert!(
                (ratio - p99 / mean).abs() < 1e-9,
                "{mean} {p99} → σ {sigma}"
            );
        }
        assert_eq!(lognormal_sigma(10.0, 10.0), 0.0);
        assert_eq!(lognormal_sigma(10.0, 8.0), 0.0);
        assert_eq!(lognormal_sigma(1.0, 1.0e6), Z99);
    }

    #[test]
    fn draws_match_mean_and_p99() {
        let s = BatchService::new(20.0, 50.0, 1000.0 / 20.0, 1, 1.0, 0.0);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let mut draws: Vec<f64> = (0..200_000).map(|_| s.draw(&mut rng).0 * 1000.0).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        draws.sort_by(f64::total_cmp);
        let p99 = draws[(draws.len() as f64 * 0.99) as usize];
        assert!((mean - 20.0).abs() / 20.0 < 0.01, "mean {mean}");
        assert!((p99 - 50.0).abs() / 50.0 < 0.03, "p99 {p99}");
    }

    #[test]
    fn occupancy_follows_throughput() {
        // 80 ms per request but 34 requests per second: the server overlaps requests.
        let s = BatchService::new(80.0, 80.0, 34.0, 1, 1.0, 0.0);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let (latency, occupancy) = s.draw(&mut rng);
        assert!((latency - 0.08).abs() < 1e-12);
        assert!((occupancy - 1.0 / 34.0).abs() < 1e-12);
    }
}
